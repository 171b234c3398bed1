package mysqltest_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/mysqltest"
)

func TestServer(t *testing.T) {
	srv := mysqltest.New(t, mysqltest.Config{Collation: "utf8mb4_bin"})
	db := srv.DB(t, "crm")
	var version, collation, user string
	if err := db.QueryRow(`SELECT VERSION(), @@collation_server, CURRENT_USER()`).Scan(&version, &collation, &user); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, "MariaDB") || collation != "utf8mb4_bin" || user != "root@127.0.0.1" {
		t.Fatalf("version %q, collation %q, user %q", version, collation, user)
	}
	t.Logf("MariaDB %s", version)
	if _, err := db.Exec("CREATE TABLE t (id varchar(10) primary key)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO t VALUES (?), (?)", "a", "A"); err != nil {
		t.Fatal(err) // the server's collation is case-sensitive: two keys
	}
	srv.Exec(t, "CREATE DATABASE other", "CREATE TABLE other.t (x int)")
	if err := db.QueryRow("SELECT COUNT(*) FROM other.t").Scan(new(int)); err != nil {
		t.Fatal(err)
	}
}

func TestAvailable(t *testing.T) {
	if err := mysqltest.Available(mysqltest.DefaultConfig()); err != nil {
		t.Fatal(err) // the tests that need MariaDB fail with this message
	}
	err := mysqltest.Available(mysqltest.Config{Server: "/nonexistent/mariadbd"})
	if err == nil || !strings.Contains(err.Error(), "apt-get install mariadb-server") {
		t.Fatalf("%v, want a message saying to install mariadb-server", err)
	}
}

// fatalTB records the first Fatal and ends the goroutine, as testing does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fatalTB) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }

// Without MariaDB's programs a test that needs them fails, saying what to
// install; it never passes by skipping.
func TestNewFailsWithoutMariaDB(t *testing.T) {
	for _, cfg := range []mysqltest.Config{{Server: "/nonexistent/mariadbd"}, {InstallDB: "/nonexistent/mariadb-install-db"}} {
		tb := &fatalTB{TB: t}
		done := make(chan *mysqltest.Server)
		go func() {
			defer close(done)
			done <- mysqltest.New(tb, cfg)
		}()
		if srv := <-done; srv != nil || !strings.Contains(tb.msg, "apt-get install mariadb-server") {
			t.Fatalf("%+v: server %v, failure %q; want a failure saying to install mariadb-server", cfg, srv, tb.msg)
		}
	}
}
