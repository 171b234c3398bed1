package postgres

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pglogrepl"
)

// TestSinkBehind: a replica that lost its data (its index is new again) gets a full snapshot
// from the connector's copy at the next change, then the changes; the admin listener says ready
// once the first copy reached the sink and serves the connector's metrics.
func TestSinkBehind(t *testing.T) {
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm",
		`INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`)
	rep := newReplica(t)
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	admin := httptest.NewServer(run.c.Handler())
	defer admin.Close()
	waitEqual(t, rep, conn, "after the snapshot")
	get := func(path string) (int, string) {
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "ready", func() bool { code, _ := get("/health/ready"); return code == 200 })
	if code, _ := get("/health/live"); code != 200 {
		t.Fatalf("/health/live %d", code)
	}

	// The replica loses everything.
	if _, err := rep.repl.LoadSnapshot(strings.NewReader(`{"seq":0}` + "\n")); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, "crm", `INSERT INTO crm_contacts VALUES ('c-2','loc-1','u-1')`)
	waitEqual(t, rep, conn, "after the replica lost its data")
	// the replica can hold the snapshot a moment before the connector counts it
	waitFor(t, "the second snapshot counted", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, "crmauthz_connector_snapshots_written_total 2")
	})
	_, body := get("/metrics")
	for _, w := range []string{"crmauthz_connector_snapshots_written_total 2", `crmauthz_connector_events_written_total{op="record.upsert"}`,
		`crmauthz_connector_last_sync_timestamp_seconds{slot="crmauthz"}`, "crmauthz_connector_pending_events 0"} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// TestSlotDropped: a slot dropped while the connector was stopped (or invalidated by
// max_slot_wal_keep_size) makes the next start copy the tables again; a stop and start with the
// slot in place resumes where it was.
func TestSlotDropped(t *testing.T) {
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`)
	rep := newReplica(t)
	state := t.TempDir()
	cfg := Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: state}
	run := startConnector(t, cfg)
	waitEqual(t, rep, conn, "first run")
	// the replica can hold the snapshot a moment before the connector counts it
	waitFor(t, "the first copy counted", func() bool { return plain(t, run, "crmauthz_connector_snapshots_written_total") >= 1 })
	if v := plain(t, run, "crmauthz_connector_snapshots_written_total"); v != 1 {
		t.Fatalf("the first run wrote %v snapshots, want 1", v)
	}
	run.stop()
	pg.Exec(t, "crm", `INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`)
	run = startConnector(t, cfg)
	waitEqual(t, rep, conn, "resumed")
	run.stop()
	if v := plain(t, run, "crmauthz_connector_snapshots_written_total"); v != 0 {
		t.Fatalf("a resume wrote %v snapshots", v)
	}
	// The connector has stopped, but PostgreSQL's walsender may hold the slot a moment longer
	// (it notices the closed connection on its own): the drop waits for it to let go.
	waitFor(t, "the slot released", func() bool {
		var active bool
		err := conn.QueryRow(context.Background(), "SELECT active FROM pg_replication_slots WHERE slot_name = 'crmauthz'").Scan(&active)
		return err == nil && !active
	})
	pg.Exec(t, "crm", `SELECT pg_drop_replication_slot('crmauthz')`, `INSERT INTO crm_contacts VALUES ('c-2','loc-1','u-1')`)
	run = startConnector(t, cfg)
	waitEqual(t, rep, conn, "after the slot was dropped")
	waitFor(t, "ready", func() bool { ok, _ := run.c.Ready(); return ok })
}

// plain reads a metric without labels.
func plain(tb testing.TB, r *running, name string) float64 {
	tb.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// TestPostgresRestart: a PostgreSQL restart mid-stream interrupts the session; the connector
// reconnects and resumes with nothing lost.
func TestPostgresRestart(t *testing.T) {
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`)
	rep := newReplica(t)
	startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	waitEqual(t, rep, conn, "before the restart")
	pg.Exec(t, "crm", `INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`)
	pg.Stop()
	pg.Start()
	conn = pg.Conn(t, "crm")
	pg.Exec(t, "crm", `INSERT INTO crm_contacts VALUES ('c-2','loc-1','u-1')`, `INSERT INTO crm_record_followers VALUES ('contact','c-1','u-2')`)
	waitEqual(t, rep, conn, "after the restart")
}

// TestIdleConfirms: while nothing of the mapped tables changes, the connector confirms the
// server's latest position, so writes to other tables do not pile up WAL behind the slot.
func TestIdleConfirms(t *testing.T) {
	ctx := context.Background()
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm", `CREATE TABLE unrelated(x int)`)
	rep := newReplica(t)
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	waitFor(t, "ready", func() bool { ok, _ := run.c.Ready(); return ok })
	pg.Exec(t, "crm", `INSERT INTO unrelated SELECT generate_series(1, 1000)`)
	var s string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	target, _ := pglogrepl.ParseLSN(s)
	waitFor(t, "the slot confirming past the unrelated writes", func() bool {
		var c string
		if err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'crmauthz'").Scan(&c); err != nil {
			t.Fatal(err)
		}
		lsn, _ := pglogrepl.ParseLSN(c)
		return lsn >= target
	})
	if rep.ix.AppliedSeq() != 1 {
		t.Fatalf("applied_seq %d: something was written for an unrelated table", rep.ix.AppliedSeq())
	}
}

// TestSinkDown: while the replica does not answer, changes wait (retried, nothing confirmed past
// them); when it is back, they arrive.
func TestSinkDown(t *testing.T) {
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`)
	rep := newReplica(t)
	retries := &retryCounter{}
	startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sinkLogging(t, slog.New(retries)), StateDir: t.TempDir()})
	waitEqual(t, rep, conn, "before the replica goes down")
	rep.down()
	before := retries.n.Load()
	pg.Exec(t, "crm", `INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`, `INSERT INTO crm_contacts VALUES ('c-2','loc-1','u-1')`)
	waitFor(t, "the sink retrying the changes", func() bool { return retries.n.Load() >= before+3 })
	rep.up(t)
	waitEqual(t, rep, conn, "after the replica is back")
}

// retryCounter is a slog.Handler counting the sink's "sink: retrying" records.
type retryCounter struct{ n atomic.Int64 }

func (c *retryCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *retryCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *retryCounter) WithGroup(string) slog.Handler            { return c }
func (c *retryCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "sink: retrying" {
		c.n.Add(1)
	}
	return nil
}
