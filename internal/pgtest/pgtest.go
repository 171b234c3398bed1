// Package pgtest runs a throwaway PostgreSQL server for tests: initdb and
// pg_ctl of the installed PostgreSQL (PGBIN, default the newest /usr/lib/postgresql/*/bin)
// in a temporary directory, on a free loopback port, stopped and removed by
// the test's cleanup. When the test runs as root, the server runs as the
// unprivileged user postgres (initdb refuses root). A machine without
// PostgreSQL skips the test.
package pgtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// Server is a running PostgreSQL.
type Server struct {
	// DSN connects as the superuser "postgres" to the database "postgres",
	// without a password (trust on loopback).
	DSN  string
	Port int
	Dir  string
}

// Start starts a server for tb and stops it in tb's cleanup.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := os.Getenv("PGBIN")
	if bin == "" {
		bin = "/usr/lib/postgresql/15/bin"
		// Debian's packages: the newest installed major version.
		if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(dirs) > 0 {
			slices.SortFunc(dirs, func(a, b string) int { return majorOf(a) - majorOf(b) })
			bin = filepath.Dir(dirs[len(dirs)-1])
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		tb.Skipf("pgtest: no PostgreSQL at %s (set PGBIN): %v", bin, err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	asPostgres := os.Geteuid() == 0
	if asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Skipf("pgtest: running as root and there is no user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		tb.Helper()
		path := filepath.Join(bin, name)
		var cmd *exec.Cmd
		if asPostgres {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
		} else {
			cmd = exec.Command(path, args...)
		}
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			tb.Fatalf("pgtest: %s %v: %v\n%s", name, args, err, out.String())
		}
	}
	data := filepath.Join(dir, "data")
	run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale", "C", "--no-sync")
	port := freePort(tb)
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB -c max_connections=20", port, dir)
	run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
	tb.Cleanup(func() {
		path := filepath.Join(bin, "pg_ctl")
		args := []string{"-D", data, "-m", "immediate", "-w", "stop"}
		var cmd *exec.Cmd
		if asPostgres {
			cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
		} else {
			cmd = exec.Command(path, args...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Logf("pgtest: pg_ctl stop: %v\n%s", err, out)
		}
	})
	return &Server{DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), Port: port, Dir: dir}
}

// majorOf reads the major version of /usr/lib/postgresql/<major>/bin/initdb.
func majorOf(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// freePort finds a free TCP port on 127.0.0.1. Another process may take it
// before the server binds; pg_ctl then fails and the test says so.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
