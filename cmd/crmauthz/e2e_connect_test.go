package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/pgtest"
)

// TestConnectPostgresE2E: the binary's `connect postgres` copies a PostgreSQL database into a
// running `crmauthz serve` over its replication API, then follows its changes; decisions follow
// the rows. SIGTERM stops it cleanly.
func TestConnectPostgresE2E(t *testing.T) {
	pg := crmPostgres(t)
	side := startServer(t, t.TempDir())
	c := startPGConnector(t, pg, side.admin)
	cmd, done, stderr := c.cmd, c.done, c.stderr
	if allow, reason := decide(t, side, "u-2", "edit", "contact", "c-1", nil); !allow || reason != "follower" {
		t.Fatalf("u-2 edits c-1: %v %s, want allow follower", allow, reason)
	}
	pg.Exec(t, "crm", "BEGIN", `UPDATE crm_contacts SET owner_id = 'u-2' WHERE id = 'c-1'`,
		`DELETE FROM crm_record_followers WHERE record_id = 'c-1'`, "COMMIT")
	eventually(t, "the owner change", func() bool {
		allow, reason := decide(t, side, "u-1", "view", "contact", "c-1", nil)
		return !allow && reason == "not_assigned"
	})
	if allow, reason := decide(t, side, "u-2", "delete", "contact", "c-1", nil); !allow || reason != "owner" {
		t.Fatalf("u-2 deletes c-1: %v %s, want allow owner", allow, reason)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("the connector exited with %v after SIGTERM\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the connector did not stop within 20s of SIGTERM")
	}
	if strings.Contains(stderr.String(), `"level":"ERROR"`) {
		t.Errorf("errors logged:\n%s", stderr.String())
	}
}

// crmPostgres starts a PostgreSQL with the database crm in the default schema (docs/reference.md
// §4.1): users u-1 and u-2 of loc-1, the contact c-1 owned by u-1 and followed by u-2.
func crmPostgres(t testing.TB) *pgtest.Server {
	t.Helper()
	pg := pgtest.Start(t, pgtest.Options{})
	pg.Exec(t, "postgres", "CREATE DATABASE crm")
	pg.Exec(t, "crm",
		`CREATE TABLE crm_users(id text primary key, role text not null, location_ids text[] not null,
			assigned_data_only bool not null default false, contacts_enabled bool not null default true,
			opportunities_enabled bool not null default true)`,
		`CREATE TABLE crm_contacts(id text primary key, location_id text not null, owner_id text)`,
		`CREATE TABLE crm_opportunities(id text primary key, location_id text not null, owner_id text, contact_id text)`,
		`CREATE TABLE crm_record_followers(record_type text not null, record_id text not null, user_id text not null,
			primary key (record_type, record_id, user_id))`,
		`INSERT INTO crm_users VALUES ('u-1','user','{loc-1}',true,true,true), ('u-2','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts VALUES ('c-1','loc-1','u-1')`,
		`INSERT INTO crm_record_followers VALUES ('contact','c-1','u-2')`)
	return pg
}

// pgConnector is one running `crmauthz connect postgres`.
type pgConnector struct {
	cmd    *exec.Cmd
	admin  string     // host:port of its admin listener
	done   chan error // its exit, once; put it back after reading it (the cleanup reads it)
	stderr *syncBuffer
}

// startPGConnector runs `connect postgres` from pg's database crm into the crmauthz whose admin
// URL is sink, and returns once it is ready. It is killed at the test's end, and its log shown
// if the test failed.
func startPGConnector(t testing.TB, pg *pgtest.Server, sink string) *pgConnector {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &pgConnector{admin: ln.Addr().String(), done: make(chan error, 1), stderr: &syncBuffer{}}
	ln.Close()
	c.cmd = exec.Command(binPath, "connect", "postgres", "--dsn", pg.DSN("postgres", "crm"), "--sink", sink,
		"--sink-token-file", tokenFile, "--state-dir", t.TempDir(), "--admin-addr", c.admin)
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("the connector's log:\n%s", c.stderr.String())
		}
	})
	eventually(t, "the connector ready", func() bool {
		resp, err := http.Get("http://" + c.admin + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return c
}
