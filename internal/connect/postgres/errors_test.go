package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/pgtest"
)

// TestClearErrors: what an operator gets wrong stops the connector with a message that says what
// to change, and nothing is written to the sink.
func TestClearErrors(t *testing.T) {
	pg := crmDB(t)
	pg.Exec(t, "postgres", "CREATE ROLE norepl LOGIN", "CREATE DATABASE noident")
	pg.Exec(t, "crm", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO norepl")
	pg.Exec(t, "noident", append(append([]string{}, schema[:3]...),
		`CREATE TABLE crm_record_followers(record_type text, record_id text, user_id text)`)...)
	replicaLevel := pgtest.Start(t, pgtest.Options{WALLevel: "replica"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	withUsersTable := mapping.Default()
	withUsersTable.Users.Table = "people"
	withColumn := mapping.Default()
	withColumn.Contacts.Owner = "assignee"
	cases := []struct {
		name string
		dsn  string
		m    mapping.Mapping
		want []string
	}{
		{"closed port", "postgres://postgres@" + closed + "/crm?sslmode=disable&connect_timeout=5", mapping.Default(),
			[]string{"connecting to PostgreSQL at 127.0.0.1", "refused"}},
		{"role without REPLICATION", pg.DSN("norepl", "crm"), mapping.Default(),
			[]string{`the role "norepl" has no REPLICATION`, `ALTER ROLE "norepl" REPLICATION`}},
		{"wal_level replica", replicaLevel.DSN("postgres", "postgres"), mapping.Default(),
			[]string{`wal_level is "replica"`, "wal_level = logical"}},
		{"missing table", pg.DSN("postgres", "crm"), withUsersTable,
			[]string{`users.table "people": no such table`}},
		{"missing column", pg.DSN("postgres", "crm"), withColumn,
			[]string{`has no column "assignee" (the mapping's contacts.owner)`}},
		{"followers without a key", pg.DSN("postgres", "noident"), mapping.Default(),
			[]string{"must identify its rows by (record_type, record_id, user_id)", "REPLICA IDENTITY FULL"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := newReplica(t)
			c, err := New(Config{DSN: tc.dsn, Mapping: tc.m, Sink: rep.sink(t), StateDir: t.TempDir(), Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = c.Run(ctx)
			if err == nil {
				t.Fatal("Run returned nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if ok, why := c.Ready(); ok || !strings.Contains(why, "not reached the sink") {
				t.Errorf("Ready = %v, %q", ok, why)
			}
			if rep.ix.AppliedSeq() != 0 {
				t.Errorf("something was written: applied_seq %d", rep.ix.AppliedSeq())
			}
		})
	}
}

// TestConfigChecks: New refuses bad settings before connecting.
func TestConfigChecks(t *testing.T) {
	rep := newReplica(t)
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no dsn", Config{Sink: rep.sink(t), StateDir: t.TempDir()}, "no DSN"},
		{"no state dir", Config{DSN: "postgres://x@127.0.0.1/db", Sink: rep.sink(t)}, "no state directory"},
		{"bad slot", Config{DSN: "postgres://x@127.0.0.1/db", Sink: rep.sink(t), StateDir: t.TempDir(), Slot: "Bad-Slot"}, "a slot name is"},
		{"bad publication", Config{DSN: "postgres://x@127.0.0.1/db", Sink: rep.sink(t), StateDir: t.TempDir(), Publication: "a;b"}, "not a plain identifier"},
		{"bad dsn", Config{DSN: "postgres://x@127.0.0.1:notaport/db", Sink: rep.sink(t), StateDir: t.TempDir()}, "--dsn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
	var ce *ConfigError
	_ = errors.As(fmt.Errorf("x: %w", configErr("y")), &ce)
	if ce == nil {
		t.Fatal("ConfigError does not unwrap")
	}
}
