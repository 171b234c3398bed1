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
// --read-header-timeout; clients stalling in their bodies hold no in-flight
// slot (decisions of well-behaved clients go on) and get 408 after
// --body-timeout; requests beyond --max-in-flight are refused with 503
// overloaded at once.
func TestSlowAndGreedyClients(t *testing.T) {
	p := startServer(t, t.TempDir(), "--read-header-timeout", "300ms", "--read-timeout", "1s", "--body-timeout", "1s",
		"--max-in-flight", "2", "--consistency-wait", "3s")
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
		// Two decisions that wait for a seq the index never reaches hold the
		// two slots for --consistency-wait; requests meanwhile are refused.
		waiters := make(chan int, 2)
		for i := 0; i < 2; i++ {
			go func() {
				code, _ := callNoFatal(p.base+"/v1/decision", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":1000000}`)
				waiters <- code
			}()
		}
		var done, overloaded int
		for done < 2 && overloaded == 0 {
			select {
			case code := <-waiters:
				if code != http.StatusServiceUnavailable {
					t.Fatalf("a decision waiting for min_seq: %d, want 503 index_behind", code)
				}
				done++
				continue
			default:
			}
			code, body := call(t, http.MethodPost, p.base+"/v1/decision", `{"subject":"u","action":"view","resource":{"type":"contact","id":"c"}}`, nil)
			if code == http.StatusServiceUnavailable && errCode(body) == "overloaded" {
				overloaded++
			}
		}
		if overloaded == 0 {
			t.Fatal("no request was refused as overloaded while both slots were held")
		}
		for ; done < 2; done++ {
			<-waiters
		}
		// The slots are free again.
		decide(t, p, "u-1", "view", "contact", "c-1", nil) // fails the test unless 200
	})
}

// callNoFatal posts body to url from any goroutine; -1 on a transport error.
func callNoFatal(url, body string) (int, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
