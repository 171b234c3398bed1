package postgres

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkStream measures changes from commit to the sink: b.N single-row transactions (an
// owner change each) committed back to back, until the replica holds the last one. The
// connector runs in this process with an HTTP sink to a real crmauthz (fsyncing bbolt on both
// sides); PostgreSQL runs with fsync=off (pgtest).
func BenchmarkStream(b *testing.B) {
	ctx := context.Background()
	pg := crmDB(b)
	conn := pg.Conn(b, "crm")
	pg.Exec(b, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts SELECT 'c-' || g, 'loc-1', 'u-1' FROM generate_series(0, 99) g`)
	rep := newReplica(b)
	run := startConnector(b, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(b), StateDir: b.TempDir()})
	waitFor(b, "ready", func() bool { ok, _ := run.c.Ready(); return ok })
	start := rep.ix.AppliedSeq()
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE crm_contacts SET owner_id = 'u-%d' WHERE id = 'c-%d'`, i+2, i%100)); err != nil {
			b.Fatal(err)
		}
	}
	commit := time.Since(t0)
	waitFor(b, "the replica", func() bool { return rep.ix.AppliedSeq() >= start+uint64(b.N) })
	total := time.Since(t0)
	b.ReportMetric(float64(b.N)/total.Seconds(), "changes/s")
	b.ReportMetric(float64(b.N)/commit.Seconds(), "commits/s")
}

// BenchmarkLag measures end-to-end lag at a paced rate of 1,000 changes/s: from the commit
// returning to the replica having applied the change (one event per change), sampled by a
// watcher polling the replica's applied_seq every 200 µs.
func BenchmarkLag(b *testing.B) {
	ctx := context.Background()
	pg := crmDB(b)
	conn := pg.Conn(b, "crm")
	pg.Exec(b, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts SELECT 'c-' || g, 'loc-1', 'u-1' FROM generate_series(0, 99) g`)
	rep := newReplica(b)
	run := startConnector(b, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(b), StateDir: b.TempDir()})
	waitFor(b, "ready", func() bool { ok, _ := run.c.Ready(); return ok })
	start := rep.ix.AppliedSeq()
	committed := make([]time.Time, b.N)
	seen := make([]time.Time, b.N)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		next := 0
		for next < b.N {
			select {
			case <-stop:
				return
			default:
			}
			applied := int(rep.ix.AppliedSeq() - start)
			now := time.Now()
			for ; next < applied && next < b.N; next++ {
				seen[next] = now
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := range b.N {
		<-tick.C
		if _, err := conn.Exec(ctx, fmt.Sprintf(`UPDATE crm_contacts SET owner_id = 'u-%d' WHERE id = 'c-%d'`, i+2, i%100)); err != nil {
			b.Fatal(err)
		}
		committed[i] = time.Now()
	}
	select {
	case <-watched:
	case <-time.After(60 * time.Second):
		close(stop)
		b.Fatal("the replica did not apply every change")
	}
	lags := make([]float64, b.N)
	for i := range lags {
		lags[i] = float64(seen[i].Sub(committed[i]).Microseconds()) / 1000
	}
	slices.Sort(lags)
	b.ReportMetric(lags[len(lags)/2], "p50-ms")
	b.ReportMetric(lags[len(lags)*99/100], "p99-ms")
	b.ReportMetric(lags[len(lags)-1], "max-ms")
}
