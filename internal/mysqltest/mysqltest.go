// Package mysqltest runs a real MariaDB server for tests (Debian's mariadb-server 10.11, which
// speaks MySQL's protocol and SQL): mariadb-install-db and mariadbd in a temporary directory, no
// option files, no system service, listening on a free loopback port and a socket in that
// directory, with a passwordless root account. mariadbd refuses to run as root, so as root the
// programs run as the unprivileged "mysql" user (Config.User). The filter's exactness tests use it
// for the mysql dialect (docs/filtering.md). Only tests import it. MYSQLTEST_LOG=1 keeps the
// server's error log in the output of a failed test.
package mysqltest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config configures New.
type Config struct {
	// Server is the server program; default /usr/sbin/mariadbd.
	Server string
	// InstallDB creates the data directory; default /usr/bin/mariadb-install-db.
	InstallDB string
	// User is the system user the programs run as when this process is root; default "mysql"
	// (the user Debian's package creates).
	User string
	// Collation is the server's default collation, whose character set is the server's;
	// default utf8mb4_general_ci, Debian's (case- and accent-insensitive, trailing spaces ignored).
	Collation string
	// StartTimeout bounds creating the data directory and starting; default one minute.
	StartTimeout time.Duration
}

// DefaultConfig is Debian's MariaDB as packaged.
func DefaultConfig() Config {
	return Config{
		Server:       "/usr/sbin/mariadbd",
		InstallDB:    "/usr/bin/mariadb-install-db",
		User:         "mysql",
		Collation:    "utf8mb4_general_ci",
		StartTimeout: time.Minute,
	}
}

// Server is a running MariaDB, stopped with the test that started it.
type Server struct {
	Port   int
	Socket string
	cfg    Config
	dir    string
	cred   *syscall.Credential // nil: run as this process's user
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// Available says why the server cannot run here (nil: it can). New fails the test without it
// (.ci/run installs Debian's mariadb-server): a test that needs MariaDB never passes by skipping.
func Available(cfg Config) error {
	cfg = withDefaults(cfg)
	for _, p := range []string{cfg.Server, cfg.InstallDB} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("MariaDB is not installed (no %s): apt-get install mariadb-server (as .ci/run does)", p)
		}
	}
	return nil
}

func withDefaults(cfg Config) Config {
	d := DefaultConfig()
	if cfg.Server == "" {
		cfg.Server = d.Server
	}
	if cfg.InstallDB == "" {
		cfg.InstallDB = d.InstallDB
	}
	if cfg.User == "" {
		cfg.User = d.User
	}
	if cfg.Collation == "" {
		cfg.Collation = d.Collation
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = d.StartTimeout
	}
	return cfg
}

// New creates a data directory and starts a server on it; both go with the test.
func New(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	cfg = withDefaults(cfg)
	if err := Available(cfg); err != nil {
		tb.Fatal(err)
	}
	if !nameRE.MatchString(cfg.Collation) || !strings.Contains(cfg.Collation, "_") {
		tb.Fatalf("mysqltest: collation %q is not a collation's name", cfg.Collation)
	}
	dir, err := os.MkdirTemp("", "mysqltest-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	s := &Server{cfg: cfg, dir: dir, Socket: filepath.Join(dir, "mysqld.sock")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(cfg.User)
		if err != nil {
			tb.Fatalf("mysqltest: running as root needs the unprivileged user %q for mariadbd (Debian's mariadb-server creates it): %v", cfg.User, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	defer cancel()
	install := s.command(ctx, cfg.InstallDB, append([]string{"--no-defaults", "--datadir=" + s.data(),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"}, s.engineArgs()...)...)
	if out, err := install.CombinedOutput(); err != nil {
		tb.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	// A free port may be taken before the server binds it: then try another.
	for attempt := 1; ; attempt++ {
		err := s.start(tb, ctx)
		if err == nil {
			return s
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			tb.Fatal(err)
		}
	}
}

var errPortTaken = errors.New("the port was taken")

func (s *Server) data() string { return filepath.Join(s.dir, "data") }
func (s *Server) log() string  { return filepath.Join(s.dir, "error.log") }

// engineArgs make a throwaway server small and quick: no durability, small buffers.
func (s *Server) engineArgs() []string {
	cs, _, _ := strings.Cut(s.cfg.Collation, "_")
	return []string{"--character-set-server=" + cs, "--collation-server=" + s.cfg.Collation,
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M", "--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0", "--tmpdir=" + s.dir}
}

// command runs prog as the unprivileged user when this process is root; the
// server dies with the test process.
func (s *Server) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// start runs mariadbd on a free port and waits until it answers.
func (s *Server) start(tb testing.TB, ctx context.Context) error {
	tb.Helper()
	s.Port = freePort(tb)
	os.Remove(s.log())
	cmd := s.command(context.Background(), s.cfg.Server, append([]string{"--no-defaults",
		"--datadir=" + s.data(), "--socket=" + s.Socket, "--pid-file=" + filepath.Join(s.dir, "mysqld.pid"),
		"--log-error=" + s.log(), "--bind-address=127.0.0.1", "--port=" + strconv.Itoa(s.Port),
		"--skip-name-resolve", "--max-connections=40", "--skip-log-bin"}, s.engineArgs()...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mysqltest: %s: %w", s.cfg.Server, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	db, err := sql.Open("mysql", s.DSN(""))
	if err != nil {
		stop()
		return err
	}
	defer db.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.PingContext(pctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			b, _ := os.ReadFile(s.log())
			if strings.Contains(string(b), "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("mysqltest: mariadbd exited (%v) before it answered:\n%s", werr, b)
		case <-ctx.Done():
			stop()
			b, _ := os.ReadFile(s.log())
			return fmt.Errorf("mysqltest: mariadbd did not answer within %v: %v\n%s", s.cfg.StartTimeout, err, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	tb.Cleanup(func() {
		stop()
		if tb.Failed() && os.Getenv("MYSQLTEST_LOG") != "" {
			if b, err := os.ReadFile(s.log()); err == nil {
				tb.Logf("MariaDB's error log:\n%s", b)
			}
		}
	})
	return nil
}

// DSN is a go-sql-driver/mysql data source name for database db ("": none) as root, over TCP,
// with the utf8mb4 character set.
func (s *Server) DSN(db string) string {
	c := mysql.NewConfig()
	c.User = "root"
	c.Net = "tcp"
	c.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	c.DBName = db
	c.Timeout = 10 * time.Second
	c.Logger = &mysql.NopLogger{}
	return c.FormatDSN()
}

// DB creates database name if it is absent and connects to it; closed with the test.
func (s *Server) DB(tb testing.TB, name string) *sql.DB {
	tb.Helper()
	if !nameRE.MatchString(name) {
		tb.Fatalf("mysqltest: database name %q is not a plain identifier", name)
	}
	s.Exec(tb, "CREATE DATABASE IF NOT EXISTS `"+name+"`")
	db, err := sql.Open("mysql", s.DSN(name))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		tb.Fatal(err)
	}
	return db
}

// Exec runs SQL statements as root, in no database.
func (s *Server) Exec(tb testing.TB, stmts ...string) {
	tb.Helper()
	db, err := sql.Open("mysql", s.DSN(""))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
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
