// Package pgtest runs a real PostgreSQL 15 server for tests: initdb and pg_ctl in a temporary
// directory, listening on a free loopback port, with wal_level=logical (the PostgreSQL connector's
// tests, docs/postgres.md). initdb refuses to run as root, so as root the server runs as the
// "postgres" user (runuser). Only tests import it. PGTEST_LOG=1 keeps the server's log on failure
// in the test output.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is where Debian's postgresql-15 package puts the server's programs.
const BinDir = "/usr/lib/postgresql/15/bin"

// Options configure Start.
type Options struct {
	// WALLevel is wal_level; default "logical".
	WALLevel string
}

// Server is a running PostgreSQL.
type Server struct {
	Port int
	dir  string // data directory (and socket directory) parent
	opts Options
	tb   testing.TB
}

// Available reports whether PostgreSQL's programs are installed. Start fails the test without
// them (.ci/run installs Debian's postgresql package): a test that needs PostgreSQL never passes
// by skipping.
func Available() bool {
	_, err := os.Stat(filepath.Join(BinDir, "pg_ctl"))
	return err == nil
}

// Start runs a fresh server; it stops with the test.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if !Available() {
		tb.Fatal("PostgreSQL 15 is not installed in " + BinDir + ": apt-get install postgresql (as .ci/run does)")
	}
	if o.WALLevel == "" {
		o.WALLevel = "logical"
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	s := &Server{dir: dir, opts: o, tb: tb}
	tb.Cleanup(func() {
		s.pgctl("stop", "-m", "immediate")
		if tb.Failed() && os.Getenv("PGTEST_LOG") != "" {
			if b, err := os.ReadFile(filepath.Join(dir, "log")); err == nil {
				tb.Logf("PostgreSQL's log:\n%s", b)
			}
		}
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root needs a postgres user for initdb: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := s.run(filepath.Join(BinDir, "initdb"), "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	s.Port = freePort(tb)
	s.Start()
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// run runs a program, as the postgres user when this process is root.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	return cmd.CombinedOutput()
}

func (s *Server) pgctl(args ...string) ([]byte, error) {
	return s.run(filepath.Join(BinDir, "pg_ctl"), append([]string{"-D", s.data(), "-w", "-t", "60"}, args...)...)
}

// Start starts the server (again, after Stop) on the same port and data.
func (s *Server) Start() {
	s.tb.Helper()
	opts := strings.Join([]string{
		"-c listen_addresses=127.0.0.1", "-c port=" + strconv.Itoa(s.Port), "-c unix_socket_directories=" + s.dir,
		"-c wal_level=" + s.opts.WALLevel, "-c max_replication_slots=10", "-c max_wal_senders=10",
		"-c fsync=off", "-c full_page_writes=off", "-c shared_buffers=16MB", "-c max_connections=40",
	}, " ")
	if out, err := s.pgctl("start", "-l", filepath.Join(s.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.tb.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server (fast shutdown).
func (s *Server) Stop() {
	s.tb.Helper()
	if out, err := s.pgctl("stop", "-m", "fast"); err != nil {
		s.tb.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// DSN is a connection string to database db as user.
func (s *Server) DSN(user, db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", user, s.Port, db)
}

// Conn connects as the superuser to db; closed with the test.
func (s *Server) Conn(tb testing.TB, db string) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres", db))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs SQL statements as the superuser on db.
func (s *Server) Exec(tb testing.TB, db string, sql ...string) {
	tb.Helper()
	c := s.Conn(tb, db)
	for _, q := range sql {
		if _, err := c.Exec(context.Background(), q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
}

func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
