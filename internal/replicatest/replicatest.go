// Package replicatest builds one real crmauthz in a test: a bbolt index in a temporary directory,
// its replicator, the built-in policy and the server, for the tests of what feeds a crmauthz (the
// sink, the connectors). The test serves the server's handlers as it needs (httptest). Only tests
// import it.
package replicatest

import (
	"log/slog"
	"testing"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/policies"
)

// Config configures New.
type Config struct {
	// Token is the replication bearer token; "" lets loopback clients replicate.
	Token string
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
	// Tracer is the server's (nil: tracing off).
	Tracer *tracing.Tracer
}

// Replica is one crmauthz; its index is closed by the test's cleanup.
type Replica struct {
	Index      *index.Index
	Replicator *replication.Replicator
	Engine     *policy.Engine
	Metrics    *metrics.Metrics
	Server     *server.Server
}

// New builds a Replica for tb.
func New(tb testing.TB, cfg Config) *Replica {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ix, err := index.Open(index.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ix.Close() })
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := policy.New(policy.Config{FS: policies.FS})
	if err != nil {
		tb.Fatal(err)
	}
	m := metrics.New(metrics.Config{})
	scfg := server.Config{Index: ix, Engine: eng, Replicator: repl, Metrics: m, Logger: cfg.Logger, Tracer: cfg.Tracer}
	if cfg.Token != "" {
		scfg.Token = []byte(cfg.Token)
	}
	srv, err := server.New(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	return &Replica{Index: ix, Replicator: repl, Engine: eng, Metrics: m, Server: srv}
}
