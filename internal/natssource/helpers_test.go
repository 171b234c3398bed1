package natssource

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// sidecar is what a sidecar holds for replication: a real bbolt index, its
// replicator and metrics, and the NATS source feeding them.
type sidecar struct {
	ix   *index.Index
	repl *replication.Replicator
	m    *metrics.Metrics
	src  *Source
	logs *lockedWriter
}

func newSidecar(tb testing.TB) *sidecar {
	tb.Helper()
	ix, err := index.Open(index.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ix.Close() })
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		tb.Fatal(err)
	}
	return &sidecar{ix: ix, repl: repl, m: metrics.New(metrics.Config{}), logs: &lockedWriter{}}
}

// start runs a Source for sc with test timings; it stops with the test.
func (sc *sidecar) start(tb testing.TB, cfg Config) *Source {
	tb.Helper()
	cfg.Index, cfg.Replicator, cfg.Metrics = sc.ix, sc.repl, sc.m
	cfg.Logger = slog.New(slog.NewTextHandler(sc.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 300 * time.Millisecond
	}
	src, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	sc.src = src
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background()) }()
	tb.Cleanup(func() {
		src.Close()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return src
}

// lockedWriter collects the source's logs for the test to read.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func createStream(tb testing.TB, js jetstream.JetStream, name, subject string) jetstream.Stream {
	tb.Helper()
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// publish sends events (JSON objects, one per string) with Publish, the code
// path of crmauthz publish.
func publish(tb testing.TB, js jetstream.JetStream, stream, subject string, events ...string) natspub.PublishResult {
	tb.Helper()
	res, err := natspub.Publish(context.Background(), js, natspub.NewEventReader(strings.NewReader(strings.Join(events, "\n"))),
		natspub.PublishOptions{Stream: stream, Subject: subject})
	if err != nil {
		tb.Fatalf("publish: %v", err)
	}
	return res
}

// publishRaw sends one message as is, bypassing Publish's validation (how a
// faulty producer would).
func publishRaw(tb testing.TB, js jetstream.JetStream, subject, body string) uint64 {
	tb.Helper()
	ack, err := js.Publish(context.Background(), subject, []byte(body))
	if err != nil {
		tb.Fatal(err)
	}
	return ack.Sequence
}

func userEvent(id string) string {
	return fmt.Sprintf(`{"op":"user.upsert","user":{"id":%q,"role":"user","location_ids":["loc-1"],"assigned_data_only":true}}`, id)
}

func userEvents(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = userEvent(fmt.Sprintf("u-%d", from+i))
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitApplied(tb testing.TB, sc *sidecar, seq uint64) {
	tb.Helper()
	waitFor(tb, time.Minute, fmt.Sprintf("applied_seq %d (have %d, status %+v)", seq, sc.ix.AppliedSeq(), sc.src.Status()), func() bool {
		return sc.ix.AppliedSeq() >= seq
	})
	if got := sc.ix.AppliedSeq(); got != seq {
		tb.Fatalf("applied_seq %d, want %d", got, seq)
	}
}

func waitState(tb testing.TB, sc *sidecar, st State) Status {
	tb.Helper()
	var last Status
	waitFor(tb, time.Minute, fmt.Sprintf("state %s", st), func() bool {
		last = sc.src.Status()
		return last.State == st
	})
	return last
}

// snapshotAt builds the snapshot NDJSON of the state after events (given
// seqs 1..len(events)), through a scratch index and the replication package.
func snapshotAt(tb testing.TB, events []string) string {
	tb.Helper()
	sc := newSidecar(tb)
	if len(events) > 0 {
		var b strings.Builder
		b.WriteString(`{"events":[`)
		for i, e := range events {
			if i > 0 {
				b.WriteByte(',')
			}
			// give each event its seq
			b.WriteString(fmt.Sprintf(`{"seq":%d,`, i+1) + strings.TrimPrefix(e, "{"))
		}
		b.WriteString(`]}`)
		evs, err := sc.repl.DecodeBatch(strings.NewReader(b.String()))
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := sc.repl.Apply(evs); err != nil {
			tb.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := sc.repl.WriteSnapshot(&out); err != nil {
		tb.Fatal(err)
	}
	return out.String()
}

// exported is the index's snapshot export, for comparing two indexes.
func (sc *sidecar) exported(tb testing.TB) string {
	tb.Helper()
	var out bytes.Buffer
	if err := sc.repl.WriteSnapshot(&out); err != nil {
		tb.Fatal(err)
	}
	return out.String()
}

func hasUser(tb testing.TB, ix *index.Index, id string) bool {
	tb.Helper()
	var ok bool
	if err := ix.View(func(tx *index.ReadTx) error {
		_, found, err := tx.User(id)
		ok = found
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	return ok
}

// gauge reads one metric's value from the registry; ok false when absent.
func gauge(tb testing.TB, m *metrics.Metrics, name string, labels map[string]string) (float64, bool) {
	tb.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			if matches(mt, labels) {
				switch {
				case mt.Gauge != nil:
					return mt.GetGauge().GetValue(), true
				case mt.Counter != nil:
					return mt.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func matches(mt *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range mt.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}
