package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// drops counts dropped lines by reason.
type drops struct {
	mu sync.Mutex
	n  map[string]int
}

func (d *drops) add(reason string, lines int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == nil {
		d.n = map[string]int{}
	}
	d.n[reason] += lines
}

func (d *drops) get(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[reason]
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newLogger(tb testing.TB, cfg Config) *Logger {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	l, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// lines parses the JSON lines of out.
func lines(tb testing.TB, out []byte) []map[string]any {
	tb.Helper()
	var res []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			tb.Fatalf("line is not JSON: %q: %v", sc.Text(), err)
		}
		res = append(res, m)
	}
	return res
}

func TestLines(t *testing.T) {
	var out bytes.Buffer
	l := newLogger(t, Config{Output: &out, InstanceID: "inst-1", Version: "v9"})
	l.Decision(Decision{ID: "d-1", Subject: "u-2", Action: "edit", Type: "contact", ResourceID: "c-42",
		Target: "u-7", HasTarget: true, Allow: true, Reason: "follower", Revision: "rev1", AppliedSeq: 42,
		Duration: 41250 * time.Nanosecond})
	l.Decision(Decision{ID: "d-2", Subject: "u-2", Action: "view", Type: "contact", ResourceID: "c-1",
		Err: "index read failed", Revision: "rev1", AppliedSeq: 42})
	l.Batch(Batch{ID: "b-1", Subject: "u-3", Revision: "rev1", AppliedSeq: 43, Duration: time.Millisecond, Checks: []Check{
		{Action: "view", Type: "contact", ResourceID: "c-1", Allow: true, Reason: "owner"},
		{Action: "add_follower", Type: "contact", ResourceID: "c-2", Target: "u-9", HasTarget: true, Reason: "not_assigned"},
	}})
	l.Batch(Batch{ID: "b-2", Subject: "u-3", Err: "boom", Revision: "rev1"})
	l.Query(Query{ID: "q-1", Path: "crmauthz/allow", Input: json.RawMessage(`{"subject":"u-2","n":1.50}`),
		Result: true, Revision: "rev1", AppliedSeq: 44})
	l.Query(Query{ID: "q-2", Path: "crmauthz/decision", Revision: "rev1"}) // no input, undefined
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, out.Bytes())
	if len(got) != 7 {
		t.Fatalf("%d lines, want 7:\n%s", len(got), out.String())
	}

	type want struct {
		id, batch, path string
		input, result   string // JSON; "" for absent
		err             bool
		seq             string
	}
	wants := []want{
		{"d-1", "", "crmauthz/decision",
			`{"subject":"u-2","action":"edit","resource":{"type":"contact","id":"c-42"},"target":"u-7"}`,
			`{"allow":true,"reason":"follower"}`, false, "42"},
		{"d-2", "", "crmauthz/decision", `{"subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"}}`, "", true, "42"},
		{"b-1-0", "b-1", "crmauthz/decision", `{"subject":"u-3","action":"view","resource":{"type":"contact","id":"c-1"}}`,
			`{"allow":true,"reason":"owner"}`, false, "43"},
		{"b-1-1", "b-1", "crmauthz/decision",
			`{"subject":"u-3","action":"add_follower","resource":{"type":"contact","id":"c-2"},"target":"u-9"}`,
			`{"allow":false,"reason":"not_assigned"}`, false, "43"},
		{"b-2", "b-2", "crmauthz/decision", `{"subject":"u-3"}`, "", true, "0"},
		{"q-1", "", "crmauthz/allow", `{"subject":"u-2","n":1.50}`, `true`, false, "44"},
		{"q-2", "", "crmauthz/decision", "", "", false, "0"},
	}
	for i, w := range wants {
		t.Run(w.id, func(t *testing.T) {
			m := got[i]
			if m["decision_id"] != w.id || m["path"] != w.path {
				t.Errorf("decision_id %v path %v, want %s %s", m["decision_id"], m["path"], w.id, w.path)
			}
			if b, _ := m["batch_decision_id"].(string); b != w.batch {
				t.Errorf("batch_decision_id %q, want %q", b, w.batch)
			}
			checkJSON(t, "input", m["input"], w.input)
			checkJSON(t, "result", m["result"], w.result)
			if _, has := m["error"]; has != w.err {
				t.Errorf("error %v, want one: %v", m["error"], w.err)
			}
			labels, _ := m["labels"].(map[string]any)
			wantLabels := map[string]any{"id": "inst-1", "version": "v9", "policy_revision": "rev1", "applied_seq": w.seq}
			if !reflect.DeepEqual(labels, wantLabels) {
				t.Errorf("labels %v, want %v", labels, wantLabels)
			}
			ts, _ := m["timestamp"].(string)
			if parsed, err := time.Parse(time.RFC3339Nano, ts); err != nil || parsed.Location() != time.UTC ||
				time.Since(parsed) > time.Hour || time.Since(parsed) < 0 {
				t.Errorf("timestamp %q: %v", ts, err)
			}
			metrics, _ := m["metrics"].(map[string]any)
			if _, ok := metrics["timer_server_handler_ns"].(json.Number); !ok {
				t.Errorf("metrics %v lack timer_server_handler_ns", m["metrics"])
			}
		})
	}
	if ns := got[0]["metrics"].(map[string]any)["timer_server_handler_ns"]; ns != json.Number("41250") {
		t.Errorf("timer_server_handler_ns = %v, want 41250", ns)
	}
}

func checkJSON(tb testing.TB, what string, got any, want string) {
	tb.Helper()
	if want == "" {
		if got != nil {
			tb.Errorf("%s = %v, want none", what, got)
		}
		return
	}
	var w any
	dec := json.NewDecoder(strings.NewReader(want))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		tb.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		tb.Errorf("%s = %v, want %v", what, got, w)
	}
}

func TestMask(t *testing.T) {
	result := map[string]any{"allow": true, "reason": "owner", "extra": map[string]any{"secret": "s"}}
	var out bytes.Buffer
	l := newLogger(t, Config{Output: &out,
		Mask:  []string{"input.target", "/result/extra/secret", "input.missing", "input.resource.id"},
		Erase: []string{"input.subject", "result.nothing"}})
	l.Decision(Decision{ID: "d-1", Subject: "u-2", Action: "edit", Type: "contact", ResourceID: "c-42", Target: "u-7", HasTarget: true, Allow: true, Reason: "owner"})
	l.Decision(Decision{ID: "d-2", Subject: "u-2", Action: "view", Type: "contact", ResourceID: "c-1"}) // no target
	l.Query(Query{ID: "q-1", Path: "crmauthz/decision", Input: json.RawMessage(`{"subject":"u-2","target":"u-7"}`), Result: result})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, out.Bytes())
	if len(got) != 3 {
		t.Fatalf("%d lines", len(got))
	}
	tests := []struct {
		name           string
		input, result  string
		masked, erased []any
	}{
		{"decision", `{"action":"edit","resource":{"type":"contact","id":"**REDACTED**"},"target":"**REDACTED**"}`,
			`{"allow":true,"reason":"owner"}`, []any{"/input/target", "/input/resource/id"}, []any{"/input/subject"}},
		{"no target", `{"action":"view","resource":{"type":"contact","id":"**REDACTED**"}}`,
			`{"allow":false,"reason":""}`, []any{"/input/resource/id"}, []any{"/input/subject"}},
		{"data API", `{"target":"**REDACTED**"}`,
			`{"allow":true,"reason":"owner","extra":{"secret":"**REDACTED**"}}`, []any{"/input/target", "/result/extra/secret"}, []any{"/input/subject"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkJSON(t, "input", got[i]["input"], tt.input)
			checkJSON(t, "result", got[i]["result"], tt.result)
			if m, _ := got[i]["masked"].([]any); !reflect.DeepEqual(m, tt.masked) {
				t.Errorf("masked = %v, want %v", got[i]["masked"], tt.masked)
			}
			if e, _ := got[i]["erased"].([]any); !reflect.DeepEqual(e, tt.erased) {
				t.Errorf("erased = %v, want %v", got[i]["erased"], tt.erased)
			}
		})
	}
	// the result handed in (shared with the server's reply) is not modified
	if result["extra"].(map[string]any)["secret"] != "s" {
		t.Error("masking modified the caller's result")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no output", Config{}},
		{"rate above 1", Config{Output: io.Discard, SampleRate: 1.5}},
		{"negative rate", Config{Output: io.Discard, SampleRate: -0.1}},
		{"mask outside input and result", Config{Output: io.Discard, Mask: []string{"labels.id"}}},
		{"empty key", Config{Output: io.Discard, Erase: []string{"input..x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := New(tt.cfg); err == nil {
				l.Close()
				t.Error("no error")
			}
		})
	}
	for _, f := range []string{"input.target", "/input/subject", "result.allow"} {
		if err := CheckField(f); err != nil {
			t.Errorf("CheckField(%q) = %v", f, err)
		}
	}
	for _, f := range []string{"path", " input.target", "input..x", "", "labels.id"} {
		if err := CheckField(f); err == nil {
			t.Errorf("CheckField(%q) accepted it", f)
		}
	}
}

func TestSampling(t *testing.T) {
	var nilLogger *Logger
	if nilLogger.Sample() {
		t.Error("a nil Logger samples")
	}
	nilLogger.Decision(Decision{}) // no panic
	if err := nilLogger.Close(); err != nil {
		t.Error(err)
	}
	tests := []struct {
		rate     float64
		min, max int // of 4000; the bounds are about 7 standard deviations wide
	}{
		{1, 4000, 4000},
		{0, 4000, 4000}, // the zero value is 1
		{0.25, 800, 1200},
		{0.01, 5, 90},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			var out bytes.Buffer
			l := newLogger(t, Config{Output: &out, SampleRate: tt.rate, BufferSize: 4000})
			for i := range 4000 {
				if l.Sample() {
					l.Decision(Decision{ID: "d-" + strconv.Itoa(i)})
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if n := len(lines(t, out.Bytes())); n < tt.min || n > tt.max {
				t.Errorf("%d of 4000 logged at rate %v, want %d..%d", n, tt.rate, tt.min, tt.max)
			}
		})
	}
}

// blockedWriter is an output that blocks: its first Write signals entered
// and waits for release, then fails, as a pipe whose reader went away.
type blockedWriter struct {
	entered, release chan struct{}
	once             sync.Once
}

func (b *blockedWriter) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return 0, errors.New("broken pipe")
}

// TestFullBufferDoesNotBlock: with the writer blocked on its output, the
// queue fills, and every further call returns at once with its lines
// counted as dropped; Close gives up on the blocked output. The writer is
// known to be blocked before the calls (no pipe size or speed is assumed),
// so the counts are exact.
func TestFullBufferDoesNotBlock(t *testing.T) {
	const queue = 16
	out := &blockedWriter{entered: make(chan struct{}), release: make(chan struct{})}
	var d drops
	l := newLogger(t, Config{Output: out, BufferSize: queue, OnDrop: d.add, CloseTimeout: 50 * time.Millisecond})

	// The first line reaches the output (the queue is then empty, so the
	// writer flushes), where the writer blocks.
	l.Decision(Decision{ID: "first"})
	<-out.entered

	const n = 20000
	for i := range n {
		l.Decision(Decision{ID: "d", Subject: strings.Repeat("u", 200), Action: "view", Type: "contact", ResourceID: "c", Allow: i%2 == 0})
	}
	l.Batch(Batch{ID: "b", Subject: "u", Checks: make([]Check, 100)})
	if got, want := d.get(DropBufferFull), n-queue+100; got != want {
		t.Errorf("%d lines dropped for a full buffer, want %d (%d calls, a queue of %d, a batch of 100 lines)", got, want, n, queue)
	}
	// Close gives up on the blocked output instead of hanging.
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "blocked") {
		t.Errorf("Close = %v, want an error about the blocked output", err)
	}
	l.Decision(Decision{ID: "late"})
	if d.get(DropClosed) != 1 {
		t.Errorf("a decision after Close was not counted as dropped")
	}
	// Unblock the writer: its output fails, it counts its lines and stops.
	close(out.release)
	<-l.done
	if d.get(DropWriteError) == 0 {
		t.Error("no write error counted after the output failed")
	}
}

// failingWriter fails while broken is set.
type failingWriter struct {
	broken atomic.Bool
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.broken.Load() {
		return 0, errors.New("disk full")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

func TestWriteErrors(t *testing.T) {
	fw := &failingWriter{}
	fw.broken.Store(true)
	var d drops
	l := newLogger(t, Config{Output: fw, OnDrop: d.add})
	l.Decision(Decision{ID: "lost"})
	waitFor(t, "the write error", func() bool { return d.get(DropWriteError) == 1 })
	fw.broken.Store(false)
	l.Decision(Decision{ID: "kept"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, fw.buf.Bytes())
	if len(got) != 1 || got[0]["decision_id"] != "kept" {
		t.Errorf("lines after recovery = %v, want only \"kept\"", got)
	}
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNoAllocationWhenOff(t *testing.T) {
	var l *Logger
	allocs := testing.AllocsPerRun(1000, func() {
		if l.Sample() {
			l.Decision(Decision{ID: "x"})
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per decision with logging off, want 0", allocs)
	}
}

func BenchmarkDecision(b *testing.B) {
	l := newLogger(b, Config{Output: io.Discard, BufferSize: 1 << 16})
	defer l.Close()
	d := Decision{ID: "0123456789abcdef-1", Subject: "u-2", Action: "edit", Type: "contact", ResourceID: "c-42",
		Allow: true, Reason: "follower", Revision: "0123456789abcdef", AppliedSeq: 42}
	b.ReportAllocs()
	for b.Loop() {
		if l.Sample() {
			l.Decision(d)
		}
	}
}
