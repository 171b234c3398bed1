package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/metrics"
)

// slowBody is a request body whose first read waits delay: a handler that
// reads it itself spends at least delay.
type slowBody struct {
	r     io.Reader
	delay time.Duration
	slept bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	if !b.slept {
		b.slept = true
		time.Sleep(b.delay)
	}
	return b.r.Read(p)
}

// histogram returns the sample count and sum of the histogram name with
// exactly labels (0, 0 when there is none).
func histogram(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) (uint64, float64) {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, mt := range mf.GetMetric() {
			if len(mt.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range mt.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metric
				}
			}
			return mt.GetHistogram().GetSampleCount(), mt.GetHistogram().GetSampleSum()
		}
	}
	return 0, 0
}

// TestDecisionDurationFromTheClock: the lean handlers time a request with
// two readings of the monotonic clock (Server.clock), not time.Now: the
// duration histogram and the decision log's handler time of /v1/decision
// and /v1/decisions still cover the whole handler, here a body that takes
// 30 ms to arrive (a lower bound only: no test asserts an upper one).
func TestDecisionDurationFromTheClock(t *testing.T) {
	const delay = 30 * time.Millisecond
	var out bytes.Buffer
	var dl *decisionlog.Logger
	ls := newLoggedServer(t, func(*metrics.Metrics) *decisionlog.Logger {
		var err error
		if dl, err = decisionlog.New(decisionlog.Config{Output: &out, InstanceID: "i-1", Version: "test"}); err != nil {
			t.Fatal(err)
		}
		return dl
	})
	h := ls.DecisionHandler()
	tests := []struct {
		path, endpoint, body string
		lines                int
	}{
		{"/v1/decision", "decision", `{"subject":"u-1","action":"view","resource":{"type":"contact","id":"c-1"}}`, 1},
		{"/v1/decisions", "decisions", `{"subject":"u-2","checks":[{"action":"edit","resource":{"type":"contact","id":"c-1"}},{"action":"view","resource":{"type":"contact","id":"c-1"}}]}`, 2},
	}
	lines := 0
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tt.path, &slowBody{r: strings.NewReader(tt.body), delay: delay})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			n, sum := histogram(t, ls.m, "crmauthz_decision_duration_seconds", map[string]string{"endpoint": tt.endpoint})
			if n != 1 || sum < delay.Seconds() {
				t.Errorf("duration histogram: %d samples, sum %gs; want 1 of at least %s", n, sum, delay)
			}
		})
		lines += tt.lines
	}
	if err := dl.Close(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for sc := bufio.NewScanner(&out); sc.Scan(); got++ {
		var m struct {
			Metrics map[string]float64 `json:"metrics"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		if ns := m.Metrics["timer_server_handler_ns"]; ns < float64(delay.Nanoseconds()) {
			t.Errorf("line %d: timer_server_handler_ns %v, want at least %d", got, ns, delay.Nanoseconds())
		}
	}
	if got != lines {
		t.Errorf("%d decision log lines, want %d:\n%s", got, lines, out.String())
	}
}

// TestClockIsMonotonic: the server's clock only moves forward and never
// reads noDuration, the sentinel of a handler without a duration.
func TestClockIsMonotonic(t *testing.T) {
	ts := newTestServer(t, nil)
	prev := ts.clock()
	for i := 0; i < 1000; i++ {
		now := ts.clock()
		if now < prev || now == noDuration {
			t.Fatalf("reading %d: %v after %v", i, now, prev)
		}
		prev = now
	}
}

// BenchmarkRequestClock is the clock of one lean handler's request: the
// start and the end of its duration, as time.Now and time.Since (before) and
// as two readings of Server.clock.
func BenchmarkRequestClock(b *testing.B) {
	s := &Server{epoch: time.Now()}
	var sink time.Duration
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			sink += time.Since(start)
		}
	})
	b.Run("clock", func(b *testing.B) {
		for b.Loop() {
			start := s.clock()
			sink += s.clock() - start
		}
	})
	if sink < 0 {
		b.Fatal(sink)
	}
}
