package decisionlog

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// marshalled is the line json.Marshal makes of the same decision (the
// encoding of writeEvent, with the input and result as maps).
func marshalled(tb testing.TB, ev event, in lineInput, allow bool, reason, errMsg string) string {
	tb.Helper()
	ev.Input = decisionInput(in.subject, in.action, in.typ, in.id, in.target, in.hasTarget)
	if errMsg != "" {
		ev.Error = evalError(errMsg)
	} else {
		ev.Result = map[string]any{"allow": allow, "reason": reason}
	}
	b, err := json.Marshal(&ev)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// awkward are strings encoding/json escapes: every ASCII byte, HTML
// characters, line separators, invalid UTF-8, multi-byte runes.
func awkward() []string {
	var all strings.Builder
	for c := 0; c < 0x80; c++ {
		all.WriteByte(byte(c))
	}
	return []string{"", "u-2", all.String(), `<script>&"\'`, "a\u2028b\u2029c", "\xff\xfe bad \xc3", "日本語 🙂",
		"tab\there\r\n", "\x00\x1f\x7f", strings.Repeat("é", 300)}
}

func TestAppendDecisionLine(t *testing.T) {
	ts := time.Date(2026, 11, 27, 8, 0, 0, 123456789, time.FixedZone("x", 3600)).UTC()
	l := &Logger{cfg: Config{InstanceID: "inst", Version: "1.2.3"}}
	for i, s := range awkward() {
		for _, tc := range []struct {
			name   string
			batch  string
			in     lineInput
			allow  bool
			errMsg string
		}{
			{"decision", "", lineInput{subject: s, action: "edit", typ: "contact", id: s}, true, ""},
			{"with target", "", lineInput{subject: "u", action: s, typ: s, id: "c-1", target: s, hasTarget: true}, false, ""},
			{"empty target", "", lineInput{subject: "u", action: "a", typ: "t", id: "i", hasTarget: true}, true, ""},
			{"error", "", lineInput{subject: "u", action: "a", typ: "t", id: "i"}, false, "evaluation failed: " + s},
			{"batch check", s + "-b", lineInput{subject: "u", action: "a", typ: "t", id: s}, true, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ev := l.newEvent(s+"-id", s, uint64(i)*1e17, ts, time.Duration(i)*time.Microsecond)
				ev.BatchDecisionID = tc.batch
				got := string(appendDecisionLine(nil, &ev, tc.in, tc.allow, "reason "+s, tc.errMsg))
				want := marshalled(t, ev, tc.in, tc.allow, "reason "+s, tc.errMsg)
				if got != want {
					t.Errorf("string %d:\n got %s\nwant %s", i, got, want)
				}
			})
		}
	}
}

// TestWriteDecisionAllocations: without masks, the writer encodes a
// decision line without allocating (it built three maps and ran
// json.Marshal's reflection for each before).
func TestWriteDecisionAllocations(t *testing.T) {
	l := newLogger(t, Config{Output: io.Discard})
	if err := l.Close(); err != nil { // the writer goroutine is gone: write is called here alone
		t.Fatal(err)
	}
	e := entry{kind: kindDecision, ts: time.Now(), d: Decision{ID: "0123456789abcdef-1", Subject: "u-2", Action: "edit",
		Type: "contact", ResourceID: "c-42", Allow: true, Reason: "follower", Revision: "0123456789abcdef", AppliedSeq: 42}}
	l.write(e) // grows the line buffer once
	if allocs := testing.AllocsPerRun(100, func() { l.write(e) }); allocs > 1 {
		t.Errorf("%v allocations per decision line, want at most 1 (the applied_seq label)", allocs)
	}
}

// BenchmarkWriteDecision is the writer goroutine's work for one decision
// line (encoding and buffering), off the request path but on the same cores.
func BenchmarkWriteDecision(b *testing.B) {
	for _, masked := range []bool{false, true} {
		name := "plain"
		cfg := Config{Output: io.Discard}
		if masked {
			name, cfg.Mask = "masked", []string{"input.target"}
		}
		b.Run(name, func(b *testing.B) {
			l := newLogger(b, cfg)
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
			e := entry{kind: kindDecision, ts: time.Now(), d: Decision{ID: "0123456789abcdef-1", Subject: "u-2", Action: "edit",
				Type: "contact", ResourceID: "c-42", Allow: true, Reason: "follower", Revision: "0123456789abcdef", AppliedSeq: 42}}
			b.ReportAllocs()
			for b.Loop() {
				l.write(e)
			}
		})
	}
	// What the writer did for every line before line.go: the input and
	// result as maps, json.Marshal.
	b.Run("marshal", func(b *testing.B) {
		l := newLogger(b, Config{Output: io.Discard})
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		d := Decision{ID: "0123456789abcdef-1", Subject: "u-2", Action: "edit", Type: "contact", ResourceID: "c-42",
			Allow: true, Reason: "follower", Revision: "0123456789abcdef", AppliedSeq: 42}
		ts := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			ev := l.newEvent(d.ID, d.Revision, d.AppliedSeq, ts, d.Duration)
			ev.Input = decisionInput(d.Subject, d.Action, d.Type, d.ResourceID, d.Target, d.HasTarget)
			ev.Result = map[string]any{"allow": d.Allow, "reason": d.Reason}
			l.writeEvent(&ev)
		}
	})
}

// countingWriter counts the writes it gets.
type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *countingWriter) get() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.writes
}

// TestFlushInterval: the writer collects the entries of FlushInterval
// from the first one and writes them at once (here: at Close), so a steady
// stream is one write per interval, not one per decision.
func TestFlushInterval(t *testing.T) {
	var w countingWriter
	l := newLogger(t, Config{Output: &w, FlushInterval: time.Hour, BufferSize: 1000})
	for i := 0; i < 100; i++ { // under half the queue: no early write
		l.Decision(Decision{ID: "d-" + strconv.Itoa(i)})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, writes := w.get()
	if got := lines(t, []byte(out)); len(got) != 100 {
		t.Fatalf("%d lines, want 100", len(got))
	}
	if writes != 1 {
		t.Errorf("%d writes, want 1 (the 100 lines at Close)", writes)
	}
}

// TestHalfFullQueueWrites: a queue half full has the writer write at once,
// before FlushInterval, so a burst is written rather than dropped.
func TestHalfFullQueueWrites(t *testing.T) {
	var w countingWriter
	var d drops
	l := newLogger(t, Config{Output: &w, FlushInterval: time.Hour, BufferSize: 8, OnDrop: d.add})
	defer l.Close()
	for i := 0; i < 5; i++ {
		l.Decision(Decision{ID: "d-" + strconv.Itoa(i)})
	}
	waitFor(t, "the lines of a half-full queue", func() bool { out, _ := w.get(); return strings.Count(out, "\n") >= 4 })
	if n := d.get(DropBufferFull); n != 0 {
		t.Errorf("%d dropped", n)
	}
}

// TestFlushTimer: a line logged within FlushInterval of the last flush
// reaches the output when the interval has passed, without Close.
func TestFlushTimer(t *testing.T) {
	var w countingWriter
	l := newLogger(t, Config{Output: &w, FlushInterval: 20 * time.Millisecond})
	defer l.Close()
	l.Decision(Decision{ID: "first"})
	l.Decision(Decision{ID: "second"})
	waitFor(t, "both lines", func() bool { out, _ := w.get(); return strings.Contains(out, `"second"`) })
}
