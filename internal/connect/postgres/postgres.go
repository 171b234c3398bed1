// Package postgres is `crmauthz connect postgres` (docs/postgres.md): it follows a CRM's own
// PostgreSQL database by logical replication (a slot with the pgoutput plugin and a publication
// of the mapped tables) and writes the facts of its rows to a sink (internal/connect/sink).
//
// The first copy is read in the snapshot the slot exported and written as one sink snapshot; then
// the slot's changes follow in commit order, one source transaction becoming events with one
// "tx". The connector keeps, in a bbolt file under Config.StateDir, its copy of the mapped rows,
// the facts it last wrote, the last commit LSN written and the last seq: the facts are recomputed
// from the copy for every record or user a change touches, and a transaction's events are
// written to the sink before the copy, positions and facts are committed; an LSN is confirmed to
// PostgreSQL only after that commit.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/natsconn"
)

// Config configures New. DSN, Sink and StateDir are required.
type Config struct {
	// DSN is the database's connection string (postgres://… or key=value): a role with
	// REPLICATION and SELECT on the mapped tables.
	DSN     string
	Mapping mapping.Mapping
	// Slot and Publication name the replication slot and the publication; default "crmauthz".
	Slot, Publication string
	Sink              sink.Sink
	StateDir          string
	Logger            *slog.Logger
	// Registry gets the crmauthz_connector_* metrics; default a new one with the Go and process
	// collectors.
	Registry *prometheus.Registry
	// StatusInterval is how often the position is confirmed to PostgreSQL; default 10s (well
	// within wal_sender_timeout).
	StatusInterval time.Duration
	// ConnectTimeout bounds each connection attempt (TCP, TLS, startup) when the DSN sets no
	// connect_timeout; default 15s.
	ConnectTimeout time.Duration
	// MaxBackoff bounds the wait between reconnections; default 10s.
	MaxBackoff time.Duration
	// AdminAddr is where the command serves Handler (health, metrics); New does not read it.
	AdminAddr string
}

// DefaultConfig returns the defaults, which New fills in for zero fields: the default schema, slot
// and publication "crmauthz"; and the command's admin listener.
func DefaultConfig() Config {
	return Config{Mapping: mapping.Default(), Slot: "crmauthz", Publication: "crmauthz",
		StatusInterval: 10 * time.Second, ConnectTimeout: 15 * time.Second, MaxBackoff: 10 * time.Second, AdminAddr: "127.0.0.1:8384"}
}

// slotName is what PostgreSQL accepts as a slot name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Connector follows one database into one sink. Run it once.
type Connector struct {
	cfg Config
	log *slog.Logger
	db  *bolt.DB
	m   *connMetrics
	reg *prometheus.Registry

	mu      sync.Mutex
	synced  bool   // the first copy reached the sink
	state   string // what it is doing, for /health/ready
	lastErr string
	runOnce sync.Once
}

// New checks cfg and opens the state file.
func New(cfg Config) (*Connector, error) {
	d := DefaultConfig()
	if cfg.Slot == "" {
		cfg.Slot = d.Slot
	}
	if cfg.Publication == "" {
		cfg.Publication = d.Publication
	}
	if cfg.Mapping == (mapping.Mapping{}) {
		cfg.Mapping = d.Mapping
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = d.StatusInterval
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = d.ConnectTimeout
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = d.MaxBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.DSN == "":
		return nil, errors.New("postgres: no DSN (--dsn postgres://USER@HOST:PORT/DB)")
	case cfg.Sink == nil:
		return nil, errors.New("postgres: no sink")
	case cfg.StateDir == "":
		return nil, errors.New("postgres: no state directory (--state-dir)")
	case !slotName.MatchString(cfg.Slot):
		return nil, fmt.Errorf("postgres: --slot %q: a slot name is 1 to 63 lower-case letters, digits and _", cfg.Slot)
	case !mapping.IsIdent(cfg.Publication):
		return nil, fmt.Errorf("postgres: --publication %q is not a plain identifier", cfg.Publication)
	}
	if err := cfg.Mapping.Validate(); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if _, err := parseDSN(cfg.DSN); err != nil {
		return nil, err
	}
	db, err := openState(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	c := &Connector{cfg: cfg, db: db, reg: reg, log: cfg.Logger.With("component", "postgres-connector", "slot", cfg.Slot),
		m: newMetrics(reg, cfg.Slot), state: "starting"}
	_ = db.View(func(tx *bolt.Tx) error {
		c.synced = stx{tx}.meta(kSynced) == 1
		return nil
	})
	return c, nil
}

// Close closes the state file. Call it after Run returned.
func (c *Connector) Close() error { return c.db.Close() }

// Run follows the database until ctx ends (nil) or a *ConfigError (the database, role or
// mapping must change). Other failures (a lost connection, a sink that does not answer) are
// retried with backoff; only the very first connection's failure is returned, so that a wrong
// DSN is seen at once.
func (c *Connector) Run(ctx context.Context) error {
	first := false
	c.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("postgres: Run called twice")
	}
	for attempt := 1; ; attempt++ {
		progressed, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var ce *ConfigError
		if errors.As(err, &ce) {
			c.setState("stopped", err)
			return err
		}
		if !progressed && attempt == 1 {
			c.setState("stopped", err)
			return err
		}
		if progressed {
			attempt = 1
		}
		c.m.errors.WithLabelValues(errKind(err)).Inc()
		wait := natsconn.Backoff(attempt, 200*time.Millisecond, c.cfg.MaxBackoff)
		c.log.Warn("replication interrupted; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		c.setState("reconnecting", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (c *Connector) setState(st string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = st
	if err != nil {
		c.lastErr = err.Error()
	}
}

// Ready tells whether the first copy reached the sink; else why not.
func (c *Connector) Ready() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		return true, ""
	}
	msg := "the first copy of the tables has not reached the sink yet (" + c.state + ")"
	if c.lastErr != "" {
		msg += ": " + c.lastErr
	}
	return false, msg
}

// Handler serves /health/live, /health/ready and /metrics (the admin listener).
func (c *Connector) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if ok, why := c.Ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"error":{"code":"not_ready","message":%q}}`+"\n", why)
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	return mux
}

// connMetrics are the crmauthz_connector_* metrics (docs/connectors.md).
type connMetrics struct {
	events       *prometheus.CounterVec
	snapshots    prometheus.Counter
	txs          *prometheus.CounterVec
	anomalies    *prometheus.CounterVec
	errors       *prometheus.CounterVec
	pending      prometheus.Gauge
	lastSync     prometheus.Gauge
	confirmedLSN prometheus.Gauge
	writtenSeq   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, slot string) *connMetrics {
	m := &connMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_events_written_total",
			Help: "Events written to the sink, by op."}, []string{"op"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Name: "crmauthz_connector_snapshots_written_total",
			Help: "Full snapshots written to the sink (the first copy, and a sink found behind)."}),
		txs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_transactions_total",
			Help: "Source transactions received, by result: written, unchanged (no fact changed), replayed (at or below the last commit written)."}, []string{"result"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_anomalies_total",
			Help: "Bad facts of the source, repaired or skipped, by kind."}, []string{"kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmauthz_connector_source_errors_total",
			Help: "Interrupted sessions, by kind: source (PostgreSQL), sink, state."}, []string{"kind"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_pending_events",
			Help: "Events of the transaction being written, not yet durable in the sink."}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_last_sync_timestamp_seconds",
			Help: "When the sink last held everything received from the slot.", ConstLabels: prometheus.Labels{"slot": slot}}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_confirmed_lsn",
			Help: "The LSN last confirmed to PostgreSQL (as a number).", ConstLabels: prometheus.Labels{"slot": slot}}),
		writtenSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "crmauthz_connector_written_seq",
			Help: "The seq of the last event written to the sink."}),
	}
	reg.MustRegister(m.events, m.snapshots, m.txs, m.anomalies, m.errors, m.pending, m.lastSync, m.confirmedLSN, m.writtenSeq)
	// Every error kind exists from the start (at 0), so that rate() and the alerts see the
	// first error (docs/operations.md, "Dashboard and alerts").
	for _, kind := range []string{"source", "sink", "state"} {
		m.errors.WithLabelValues(kind)
	}
	return m
}

// errKind labels a session's error.
func errKind(err error) string {
	var se *sinkError
	var st *stateError
	switch {
	case errors.As(err, &se):
		return "sink"
	case errors.As(err, &st):
		return "state"
	}
	return "source"
}

type sinkError struct{ err error }

func (e *sinkError) Error() string { return "the sink: " + e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

type stateError struct{ err error }

func (e *stateError) Error() string { return "the state file: " + e.err.Error() }
func (e *stateError) Unwrap() error { return e.err }
