package postgres

import (
	"bytes"
	"context"
	"fmt"
	"github.com/crmauthz/crmauthz/internal/replicatest"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/pgtest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/internal/replication"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testLogger(tb testing.TB) *slog.Logger {
	if os.Getenv("CONNECTOR_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return quiet
}

// schema is the default schema of docs/postgres.md.
var schema = []string{
	`CREATE TABLE crm_users(id text primary key, role text not null, location_ids text[] not null,
		assigned_data_only bool not null default false, contacts_enabled bool not null default true,
		opportunities_enabled bool not null default true)`,
	`CREATE TABLE crm_contacts(id text primary key, location_id text not null, owner_id text)`,
	`CREATE TABLE crm_opportunities(id text primary key, location_id text not null, owner_id text, contact_id text)`,
	`CREATE TABLE crm_record_followers(record_type text not null, record_id text not null, user_id text not null,
		primary key (record_type, record_id, user_id))`,
}

// crmDB starts PostgreSQL with a database "crm" holding the default schema.
func crmDB(tb testing.TB) *pgtest.Server {
	tb.Helper()
	pg := pgtest.Start(tb, pgtest.Options{})
	pg.Exec(tb, "postgres", "CREATE DATABASE crm")
	pg.Exec(tb, "crm", schema...)
	return pg
}

// replica is one real crmauthz (index, replicator, admin handler) over loopback.
type replica struct {
	ix      *index.Index
	repl    *replication.Replicator
	url     string
	token   string
	hs      *httptest.Server
	handler http.Handler
}

func newReplica(tb testing.TB) *replica {
	tb.Helper()
	rep := replicatest.New(tb, replicatest.Config{Token: "tok", Logger: quiet})
	ix, repl, srv := rep.Index, rep.Replicator, rep.Server
	hs := httptest.NewServer(srv.AdminHandler())
	r := &replica{}
	tb.Cleanup(func() { r.hs.Close() })
	p := filepath.Join(tb.TempDir(), "token")
	if err := os.WriteFile(p, []byte("tok"), 0o600); err != nil {
		tb.Fatal(err)
	}
	*r = replica{ix: ix, repl: repl, url: hs.URL, token: p, hs: hs, handler: srv.AdminHandler()}
	return r
}

// down stops the replica's listener (its index stays); up serves it again on the same address.
func (r *replica) down() { r.hs.Close() }

func (r *replica) up(tb testing.TB) {
	tb.Helper()
	ln, err := net.Listen("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	r.hs = &httptest.Server{Listener: ln, Config: &http.Server{Handler: r.handler}}
	r.hs.Start()
}

// model reads the replica's index as a reference model.
func (r *replica) model(tb testing.TB) *refmodel.Model {
	tb.Helper()
	var b bytes.Buffer
	if err := r.repl.WriteSnapshot(&b); err != nil {
		tb.Fatal(err)
	}
	_, m, err := refmodel.ReadSnapshot(&b)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func (r *replica) sink(tb testing.TB) sink.Sink {
	tb.Helper()
	return r.sinkLogging(tb, quiet)
}

// sinkLogging is sink with the sink's log going to logger.
func (r *replica) sinkLogging(tb testing.TB, logger *slog.Logger) sink.Sink {
	tb.Helper()
	cfg := sink.DefaultConfig()
	cfg.URL, cfg.TokenFile, cfg.Logger, cfg.MaxBackoff = r.url, r.token, logger, 50*time.Millisecond
	s, err := sink.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// running is a connector running in this process.
type running struct {
	c      *Connector
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startConnector(tb testing.TB, cfg Config) *running {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(tb)
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	cfg.Registry = prometheus.NewRegistry()
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, reg: cfg.Registry, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	tb.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.c.Close()
	r.cancel = nil
}

// sourceModel reads the source tables as the facts docs/postgres.md says the connector writes:
// users with a known role; records with their follower rows, the owner dropped, the 10 smallest.
func sourceModel(tb testing.TB, conn *pgx.Conn) *refmodel.Model {
	tb.Helper()
	ctx := context.Background()
	m := refmodel.New()
	rows, err := conn.Query(ctx, `SELECT id, role, location_ids, assigned_data_only, contacts_enabled, opportunities_enabled FROM crm_users`)
	if err != nil {
		tb.Fatal(err)
	}
	for rows.Next() {
		var u refmodel.User
		if err := rows.Scan(&u.ID, &u.Role, &u.LocationIDs, &u.AssignedDataOnly, &u.ContactsEnabled, &u.OpportunitiesEnabled); err != nil {
			tb.Fatal(err)
		}
		if u.Role == "admin" || u.Role == "user" {
			u.LocationIDs = slices.Compact(u.LocationIDs) // the generator never repeats one
			m.Users[u.ID] = u
		}
	}
	followers := map[refmodel.Key][]string{}
	rows, err = conn.Query(ctx, `SELECT record_type, record_id, user_id FROM crm_record_followers`)
	if err != nil {
		tb.Fatal(err)
	}
	for rows.Next() {
		var k refmodel.Key
		var u string
		if err := rows.Scan(&k.Type, &k.ID, &u); err != nil {
			tb.Fatal(err)
		}
		followers[k] = append(followers[k], u)
	}
	for _, q := range []struct{ typ, sql string }{
		{"contact", `SELECT id, location_id, coalesce(owner_id, ''), '' FROM crm_contacts`},
		{"opportunity", `SELECT id, location_id, coalesce(owner_id, ''), coalesce(contact_id, '') FROM crm_opportunities`},
	} {
		rows, err := conn.Query(ctx, q.sql)
		if err != nil {
			tb.Fatal(err)
		}
		for rows.Next() {
			r := refmodel.Record{Type: q.typ, Followers: []string{}}
			if err := rows.Scan(&r.ID, &r.LocationID, &r.Owner, &r.ContactID); err != nil {
				tb.Fatal(err)
			}
			fs := followers[refmodel.Key{Type: q.typ, ID: r.ID}]
			sort.Strings(fs)
			for _, f := range fs {
				if f != r.Owner && len(r.Followers) < MaxFollowers {
					r.Followers = append(r.Followers, f)
				}
			}
			m.Records[refmodel.Key{Type: q.typ, ID: r.ID}] = r
		}
	}
	return m
}

// waitEqual waits until the replica holds the source's facts.
func waitEqual(tb testing.TB, r *replica, conn *pgx.Conn, what string) {
	tb.Helper()
	var want, got string
	if !poll(func() bool {
		want, got = sourceModel(tb, conn).Canonical(), r.model(tb).Canonical()
		return want == got
	}) {
		tb.Fatalf("%s: the replica differs from the source:\n%s", what, diff(want, got))
	}
}

func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if !poll(cond) {
		tb.Fatalf("timed out waiting for %s", what)
	}
}

// poll calls cond every 20ms until it holds (true) or 30 s have passed (false): the one poller of
// these tests (a bound on a hang, not a speed requirement).
func poll(cond func() bool) bool {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func pgtestStart(tb testing.TB) *pgtest.Server { return pgtest.Start(tb, pgtest.Options{}) }
