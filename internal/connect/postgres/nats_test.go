package postgres

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// TestNATSSink: with a NATS sink the first copy is a snapshot object and the changes are stream
// messages; a sidecar reading the stream (with the bucket) ends up with the source's facts.
func TestNATSSink(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	pg.Exec(t, "crm",
		`INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true), ('u-2','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`,
		`INSERT INTO crm_record_followers VALUES ('contact','c-1','u-2')`)
	cfg := sink.DefaultConfig()
	cfg.URL, cfg.Logger, cfg.MaxBackoff = srv.URL(), quiet, 50*time.Millisecond
	sk, err := sink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: sk, StateDir: t.TempDir()})

	ix, err := index.Open(index.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		t.Fatal(err)
	}
	src, err := natssource.New(natssource.Config{URL: srv.URL(), Stream: sink.DefaultConfig().Stream, Subject: sink.DefaultConfig().Subject,
		SnapshotBucket: sink.DefaultConfig().SnapshotBucket, Index: ix, Replicator: repl, Metrics: metrics.New(metrics.Config{}),
		Logger: quiet, PollInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background()) }()
	defer func() { src.Close(); <-done }()

	same := func(what string) {
		t.Helper()
		waitFor(t, what, func() bool {
			var b bytes.Buffer
			if err := repl.WriteSnapshot(&b); err != nil {
				t.Fatal(err)
			}
			_, m, err := refmodel.ReadSnapshot(&b)
			return err == nil && m.Canonical() == sourceModel(t, conn).Canonical()
		})
	}
	same("the sidecar after the first copy")
	pg.Exec(t, "crm", "BEGIN", `UPDATE crm_contacts SET owner_id = 'u-2' WHERE id = 'c-1'`,
		`UPDATE crm_record_followers SET user_id = 'u-1' WHERE record_id = 'c-1'`,
		`INSERT INTO crm_contacts VALUES ('c-2','loc-1','u-1')`, "COMMIT")
	same("the sidecar after a transaction")
}
