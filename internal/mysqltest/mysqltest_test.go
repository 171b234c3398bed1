package mysqltest_test

import (
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
