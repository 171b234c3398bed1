package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func dial(t *testing.T, base string) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowAndGreedyClients: a client trickling its headers is cut off after
// --read-header-timeout; a client stalling in its body gets an error reply
// after --read-timeout; requests beyond --max-in-flight are refused with 503
// overloaded at once; and decisions for well-behaved clients go on meanwhile.
func TestSlowAndGreedyClients(t *testing.T) {
	p := startServer(t, t.TempDir(), "--read-header-timeout", "300ms", "--read-timeout", "1s", "--max-in-flight", "2")
	putSnapshot(t, p, loadFixture(t).snapshot(1))

	t.Run("slowloris headers", func(t *testing.T) {
		c := dial(t, p.base)
		if _, err := io.WriteString(c, "POST /v1/decision HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		closed := make(chan error, 1)
		go func() { // the server must end the connection, whatever we send
			_, err := io.ReadAll(c)
			closed <- err
		}()
		deadline := time.After(10 * time.Second)
		for i := 0; ; i++ {
			select {
			case <-closed:
				return
			case <-deadline:
				t.Fatal("the server kept a connection whose headers never finished")
			case <-time.After(100 * time.Millisecond):
				if _, err := io.WriteString(c, "X"); err != nil {
					return // closed by the server
				}
			}
		}
	})

	t.Run("stalled body and the in-flight cap", func(t *testing.T) {
		// Two requests that stall in their bodies fill the decision listener's two slots.
		replies := make(chan string, 2)
		for i := 0; i < 2; i++ {
			c := dial(t, p.base)
			if _, err := io.WriteString(c, "POST /v1/decision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"subject\":"); err != nil {
				t.Fatal(err)
			}
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					replies <- "error: " + err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				replies <- resp.Status + " " + string(b)
			}()
		}
		time.Sleep(150 * time.Millisecond) // both are in their handlers, reading
		code, body := call(t, http.MethodPost, p.base+"/v1/decision", `{"subject":"u","action":"view","resource":{"type":"contact","id":"c"}}`, nil)
		if code != http.StatusServiceUnavailable || errCode(body) != "overloaded" {
			t.Fatalf("third request while two are in flight: %d %v, want 503 overloaded", code, body)
		}
		for i := 0; i < 2; i++ {
			select {
			case r := <-replies:
				if !strings.HasPrefix(r, "408") || !strings.Contains(r, "request_timeout") {
					t.Fatalf("stalled body: %q, want 408 request_timeout", r)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a stalled body was never answered")
			}
		}
		// The slots are free again.
		decide(t, p, "u-1", "view", "contact", "c-1", nil) // fails the test unless 200
	})
}
