package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func dial(t testing.TB, base string) net.Conn {
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
// --read-header-timeout; clients stalling in their bodies hold no in-flight
// slot (decisions of well-behaved clients go on) and get 408 after
// --body-timeout; requests beyond --max-in-flight are refused with 503
// overloaded at once.
func TestSlowAndGreedyClients(t *testing.T) {
	p := startServer(t, t.TempDir(), "--read-header-timeout", "300ms", "--read-timeout", "1s", "--body-timeout", "1s",
		"--max-in-flight", "2", "--consistency-wait", "1m")
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
		deadline := time.After(time.Minute) // a hang, not a speed limit
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

	t.Run("stalled bodies hold no slot", func(t *testing.T) {
		// Four requests that stall in their bodies: twice the slots.
		const stalled = 4
		replies := make(chan string, stalled)
		for i := 0; i < stalled; i++ {
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
		// Meanwhile, decisions are answered (each fails the test unless 200).
		for i := 0; i < 10; i++ {
			decide(t, p, "u-1", "view", "contact", "c-1", nil)
		}
		for i := 0; i < stalled; i++ {
			if r := <-replies; !strings.HasPrefix(r, "408") || !strings.Contains(r, "request_timeout") {
				t.Fatalf("stalled body: %q, want 408 request_timeout", r)
			}
		}
	})

	t.Run("the in-flight cap", func(t *testing.T) {
		// Two decisions that wait for the next seq hold the two slots until the batch below
		// brings it (--consistency-wait is long); requests meanwhile are refused. Fixed work,
		// not a time window: the loop ends once a refusal is seen, however long that takes.
		// A waiter refused for want of a slot (the loop's request held one when it came)
		// asks again: only its answer once it holds a slot counts.
		next := int(status(t, p)["applied_seq"].(float64)) + 1
		waiters := make(chan int, 2)
		for i := 0; i < 2; i++ {
			go func() {
				for {
					code, body, _ := callNoFatal(p.base+"/v1/decision", fmt.Sprintf(`{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":%d}`, next))
					if code != http.StatusServiceUnavailable || !strings.Contains(body, `"overloaded"`) {
						waiters <- code
						return
					}
				}
			}()
		}
		overloaded := 0
		for overloaded == 0 {
			select {
			case code := <-waiters:
				t.Fatalf("a decision waiting for seq %d returned %d before the seq was applied", next, code)
			default:
			}
			code, body := call(t, http.MethodPost, p.base+"/v1/decision", `{"subject":"u","action":"view","resource":{"type":"contact","id":"c"}}`, nil)
			if code == http.StatusServiceUnavailable && errCode(body) == "overloaded" {
				overloaded++
			}
		}
		batch := fmt.Sprintf(`{"events":[{"seq":%d,"op":"user.upsert","user":{"id":"u-cap","role":"user","location_ids":["loc-1"]}}]}`, next)
		if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events", batch, authz); code != http.StatusOK {
			t.Fatalf("batch: %d %v", code, body)
		}
		for i := 0; i < 2; i++ {
			if code := <-waiters; code != http.StatusOK {
				t.Fatalf("a decision waiting for seq %d: %d after it was applied, want 200", next, code)
			}
		}
		// The slots are free again.
		decide(t, p, "u-1", "view", "contact", "c-1", nil) // fails the test unless 200
	})
}

// callNoFatal posts body to url from any goroutine and returns the status and
// the reply's body; -1 on a transport error.
func callNoFatal(url, body string) (int, string, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return -1, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}
