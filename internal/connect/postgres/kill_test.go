package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
)

// TestHelperConnector is the connector as a separate process, for TestKillResume (it runs only
// with CONNECTOR_HELPER=1 in the environment).
func TestHelperConnector(t *testing.T) {
	if os.Getenv("CONNECTOR_HELPER") != "1" {
		t.Skip("a helper process of TestKillResume")
	}
	cfg := sink.DefaultConfig()
	cfg.URL, cfg.TokenFile, cfg.Logger, cfg.MaxBackoff = os.Getenv("SINK_URL"), os.Getenv("SINK_TOKEN_FILE"), testLogger(t), 50*time.Millisecond
	s, err := sink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{DSN: os.Getenv("PG_DSN"), Sink: s, StateDir: os.Getenv("STATE_DIR"), Logger: testLogger(t),
		StatusInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestKillResume: the connector is SIGKILLed at random moments while transactions commit; each
// restart resumes from its state, and in the end the replica holds the source's facts. Meanwhile
// the slot's confirmed_flush_lsn never passes what the replica holds (once the first copy is in
// it): every transaction that committed at or below it is in the replica.
func TestKillResume(t *testing.T) {
	ctx := context.Background()
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	rep := newReplica(t)
	stateDir := t.TempDir()
	logf, err := os.Create(filepath.Join(t.TempDir(), "connector.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConnector$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CONNECTOR_HELPER=1", "SINK_URL="+rep.url, "SINK_TOKEN_FILE="+rep.token,
			"PG_DSN="+pg.DSN("postgres", "crm"), "STATE_DIR="+stateDir)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	g := &gen{rng: rand.New(rand.NewPCG(3, 4))}
	for range 20 {
		g.tx(ctx, t, conn)
	}
	cmd := start()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// Markers: user m-i inserted by transaction i, with the WAL position after its commit.
	type marker struct {
		id  string
		lsn pglogrepl.LSN
	}
	var mu sync.Mutex
	var markers []marker
	var stop atomic.Bool
	var violation atomic.Value
	checkConn := pg.Conn(t, "crm")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			var s *string
			if err := checkConn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'crmauthz'").Scan(&s); err != nil || s == nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			confirmed, _ := pglogrepl.ParseLSN(*s)
			if rep.ix.AppliedSeq() == 0 {
				// A new slot starts at its consistent point, which the first copy covers:
				// the check starts once that copy is in the replica.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			held := rep.model(t).Users
			mu.Lock()
			ms := slices.Clone(markers)
			mu.Unlock()
			for _, m := range ms {
				if _, ok := held[m.id]; m.lsn <= confirmed && !ok {
					violation.Store(fmt.Sprintf("confirmed_flush_lsn %s passed the commit of %s (%s), which the replica does not hold", confirmed, m.id, m.lsn))
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	writer := pg.Conn(t, "crm")
	for i := range 90 {
		g.tx(ctx, t, writer)
		id := fmt.Sprintf("m-%d", i)
		if _, err := writer.Exec(ctx, fmt.Sprintf(`INSERT INTO crm_users VALUES ('%s','user','{loc-1}',false,true,true)`, id)); err != nil {
			t.Fatal(err)
		}
		var s string
		if err := writer.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
			t.Fatal(err)
		}
		lsn, _ := pglogrepl.ParseLSN(s)
		mu.Lock()
		markers = append(markers, marker{id, lsn})
		mu.Unlock()
		if i%30 == 15 {
			time.Sleep(time.Duration(g.rng.IntN(300)) * time.Millisecond)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			cmd = start()
		}
		time.Sleep(time.Duration(g.rng.IntN(10)) * time.Millisecond)
	}
	waitEqual(t, rep, conn, "after the kills")
	stop.Store(true)
	wg.Wait()
	if v := violation.Load(); v != nil {
		t.Fatal(v)
	}
	mu.Lock()
	defer mu.Unlock()
	var s *string
	if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'crmauthz'").Scan(&s); err != nil || s == nil {
		t.Fatalf("the slot: %v", err)
	}
	if c, _ := pglogrepl.ParseLSN(*s); c < markers[len(markers)-1].lsn-1 {
		waitFor(t, "the slot confirming the last commit", func() bool {
			_ = conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'crmauthz'").Scan(&s)
			c, _ := pglogrepl.ParseLSN(*s)
			return c >= markers[len(markers)-1].lsn
		})
	}
}
