package postgres

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSourceErrorKindsFromTheStart: every kind of crmauthz_connector_source_errors_total is
// exported at 0 before the first error, so that rate() (the dashboard, the alerts) sees it.
func TestSourceErrorKindsFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg, "slot")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "crmauthz_connector_source_errors_total" {
			continue
		}
		if n := len(mf.GetMetric()); n != 3 {
			t.Fatalf("%d source error series, want 3", n)
		}
		for _, s := range mf.GetMetric() {
			if v := s.GetCounter().GetValue(); v != 0 {
				t.Errorf("%v starts at %v", s.GetLabel(), v)
			}
		}
		return
	}
	t.Fatal("no crmauthz_connector_source_errors_total before the first error")
}

// TestLastSyncMovesWhileIdle: with no change in the source, the last sync time still moves (at
// each status update), so that an idle database does not raise CrmauthzConnectorSyncStale
// (docs/operations.md). It stayed at the first copy's time before.
func TestLastSyncMovesWhileIdle(t *testing.T) {
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm", `INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true)`)
	rep := newReplica(t)
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	waitEqual(t, rep, conn, "after the snapshot")
	const name = "crmauthz_connector_last_sync_timestamp_seconds"
	waitFor(t, "the first copy's sync time", func() bool { return plain(t, run, name) > 0 })
	first := plain(t, run, name)
	waitFor(t, "the sync time to move without a change", func() bool { return plain(t, run, name) > first+0.2 })
}
