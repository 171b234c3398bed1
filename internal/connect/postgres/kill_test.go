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
	"strings"
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
// it): every transaction that committed at or below it is in the replica, but for a slot created
// again for an interrupted first copy, which starts at its consistent point (its copy covers it).
func TestKillResume(t *testing.T) {
	ctx := context.Background()
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	rep := newReplica(t)
	stateDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "connector.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConnector$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CONNECTOR_HELPER=1", "SINK_URL="+rep.url, "SINK_TOKEN_FILE="+rep.token,
			"PG_DSN="+pg.DSN("postgres", "crm"), "STATE_DIR="+stateDir,
			"CONNECTOR_LOG=1") // its log tells the slots it created (suspect, below)
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
	// suspect is a confirmed_flush_lsn seen past a commit the replica did not hold yet. One case
	// is not a violation: a first copy killed after it reached the replica but before the
	// connector's state recorded it is done again in a new slot, whose confirmed_flush_lsn is its
	// consistent point, which the new copy (not yet in the replica) covers. The connector logs
	// that point when it creates the slot, so suspects are judged against its log at the end.
	type suspect struct {
		confirmed pglogrepl.LSN
		what      string
	}
	var stop atomic.Bool
	var suspects []suspect // under mu
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
					mu.Lock()
					suspects = append(suspects, suspect{confirmed, fmt.Sprintf("confirmed_flush_lsn %s passed the commit of %s (%s), which the replica does not hold", confirmed, m.id, m.lsn)})
					mu.Unlock()
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
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, v := range suspects {
		if !createdSlotAt(string(log), v.confirmed) {
			t.Fatal(v.what)
		}
	}
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

// createdSlotAt tells whether the connector's log (slog's text form) says it created a slot whose
// consistent point is lsn.
func createdSlotAt(log string, lsn pglogrepl.LSN) bool {
	for line := range strings.Lines(log) {
		line = strings.TrimSpace(line)
		if strings.Contains(line, "created the replication slot") &&
			(strings.Contains(line, "consistent_point="+lsn.String()+" ") || strings.HasSuffix(line, "consistent_point="+lsn.String())) {
			return true
		}
	}
	return false
}

func TestCreatedSlotAt(t *testing.T) {
	const log = `time=2026-12-06T19:38:53.728Z level=INFO msg="created the publication" component=postgres-connector slot=crmauthz
time=2026-12-06T19:38:53.741Z level=INFO msg="created the replication slot; copying the tables in its snapshot" component=postgres-connector slot=crmauthz consistent_point=0/1938DD0
time=2026-12-06T19:38:54.100Z level=INFO msg=streaming component=postgres-connector from_lsn=0/193B590
`
	for _, c := range []struct {
		lsn  pglogrepl.LSN
		want bool
	}{
		{0x1938DD0, true},
		{0x1938DD, false},  // a prefix of the logged point
		{0x193B590, false}, // logged, but not as a slot's consistent point
		{0x1938DD1, false},
	} {
		t.Run(c.lsn.String(), func(t *testing.T) {
			if got := createdSlotAt(log, c.lsn); got != c.want {
				t.Fatalf("createdSlotAt(%s) = %v, want %v", c.lsn, got, c.want)
			}
		})
	}
}
