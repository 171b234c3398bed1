package postgres

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// silentServer accepts TCP connections and never answers: a database behind a broken proxy, or a
// host that is not PostgreSQL.
func silentServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestConnectAttemptsTimeOut: a connection attempt to a server that never answers fails after
// Config.ConnectTimeout when the DSN sets no connect_timeout (pgx has none by default: the
// connector waited for ever, never reaching its reconnect), and after the DSN's own when it does.
func TestConnectAttemptsTimeOut(t *testing.T) {
	addr := silentServer(t)
	tests := []struct {
		name, dsn string
		timeout   time.Duration
	}{
		{"default", "postgres://crmauthz@" + addr + "/crm?sslmode=disable", 100 * time.Millisecond},
		{"dsn's connect_timeout", "postgres://crmauthz@" + addr + "/crm?sslmode=disable&connect_timeout=1", time.Hour},
	}
	for _, tc := range tests {
		for _, kind := range []string{"sql", "replication"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				c := &Connector{cfg: Config{DSN: tc.dsn, ConnectTimeout: tc.timeout}}
				done := make(chan error, 1)
				go func() {
					if kind == "sql" {
						cc, err := c.connect(context.Background())
						if err == nil {
							cc.Close(context.Background())
						}
						done <- err
						return
					}
					rc, err := c.connectReplication(context.Background())
					if err == nil {
						rc.Close(context.Background())
					}
					done <- err
				}()
				select {
				case err := <-done:
					if err == nil {
						t.Fatal("connected to a server that never answers")
					}
				case <-time.After(time.Minute): // a bound on a hang, not on speed
					t.Fatal("the connection attempt did not end")
				}
			})
		}
	}
}
