package sink

import (
	"context"
	"errors"
	"fmt"
	"github.com/crmauthz/crmauthz/internal/replicatest"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// replica is one real crmauthz: a bbolt index, its replicator, the admin handler over loopback.
type replica struct {
	ix    *index.Index
	repl  *replication.Replicator
	url   string
	posts atomic.Int64 // POST /v1/replication/events seen
	fail  atomic.Int64 // answer 503 to this many more requests
}

func newReplica(tb testing.TB, token string) *replica {
	tb.Helper()
	rep := replicatest.New(tb, replicatest.Config{Token: token, Logger: quiet})
	ix, repl, srv := rep.Index, rep.Replicator, rep.Server
	r := &replica{ix: ix, repl: repl}
	admin := srv.AdminHandler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.fail.Load() > 0 {
			r.fail.Add(-1)
			http.Error(w, `{"error":{"code":"unavailable","message":"test"}}`, http.StatusServiceUnavailable)
			return
		}
		if req.Method == http.MethodPost && req.URL.Path == "/v1/replication/events" {
			r.posts.Add(1)
		}
		admin.ServeHTTP(w, req)
	}))
	tb.Cleanup(hs.Close)
	r.url = hs.URL
	return r
}

func tokenFile(tb testing.TB, tok string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func str(s string) *string { return &s }

func userEv(seq uint64, id, tx string) replication.Event {
	return replication.Event{Seq: seq, Op: replication.OpUserUpsert, Tx: replication.TxID(tx),
		User: &replication.UserDoc{ID: str(id), Role: str("user"), LocationIDs: &[]string{"loc-1"}}}
}

func snapshotOf(ids ...string) func(io.Writer) error {
	return func(w io.Writer) error {
		for _, id := range ids {
			if _, err := fmt.Fprintf(w, `{"user":{"id":%q,"role":"user","location_ids":["loc-1"]}}`+"\n", id); err != nil {
				return err
			}
		}
		return nil
	}
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

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewChecksConfig(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, url, token, want string }{
		{"no url", "", "", "no URL"},
		{"unknown scheme", "ftp://x:1", "", "the scheme must be"},
		{"credentials in an http url", "http://u:p@127.0.0.1:1", "", "no credentials"},
		{"missing token file", "http://127.0.0.1:1", "/nonexistent/tok", "the token file"},
		{"empty token file", "http://127.0.0.1:1", empty, "is empty"},
		{"nats without host", "nats://", "", "no host"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{URL: tc.url, TokenFile: tc.token})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestHTTPSink: a snapshot, events continuing it, a redelivery, a gap (typed, with the replica's
// applied_seq), retries over 5xx, a wrong token (permanent), and batches cut between
// transactions only.
func TestHTTPSink(t *testing.T) {
	ctx := context.Background()
	r := newReplica(t, "s3cret")
	s, err := New(Config{URL: r.url, TokenFile: tokenFile(t, "s3cret"), Logger: quiet, MaxBatchEvents: 3, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h, err := s.Head(ctx); err != nil || h != 0 {
		t.Fatalf("Head = %d, %v; want 0", h, err)
	}
	if err := s.Snapshot(ctx, 5, snapshotOf("u-1", "u-2")); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx); err != nil || h != 5 || !hasUser(t, r.ix, "u-2") {
		t.Fatalf("after the snapshot: Head = %d, %v", h, err)
	}
	// [a a] [b b c]: a batch of 3 at most, never cut inside a tx.
	evs := []replication.Event{userEv(6, "u-6", "a"), userEv(7, "u-7", "a"), userEv(8, "u-8", "b"), userEv(9, "u-9", "b"), userEv(10, "u-10", "")}
	r.fail.Store(2) // two 503s: retried
	if err := s.Write(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if got := r.posts.Load(); got != 2 {
		t.Fatalf("%d batches posted, want 2 ([a a] [b b c])", got)
	}
	if r.ix.AppliedSeq() != 10 || !hasUser(t, r.ix, "u-10") {
		t.Fatalf("applied_seq %d", r.ix.AppliedSeq())
	}
	if err := s.Write(ctx, evs); err != nil { // redelivery: skipped by the replica
		t.Fatalf("redelivery: %v", err)
	}
	err = s.Write(ctx, []replication.Event{userEv(12, "u-12", "")})
	var gap *GapError
	if !errors.As(err, &gap) || gap.Head != 10 {
		t.Fatalf("a gap: %v, want a *GapError with Head 10", err)
	}
	if ae := (*apiError)(nil); !errors.As(err, &ae) || ae.Code != "sequence_gap" {
		t.Fatalf("a gap: %v does not unwrap to the replica's sequence_gap answer", err)
	}

	bad, err := New(Config{URL: r.url, TokenFile: tokenFile(t, "wrong"), Logger: quiet, RetryFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := r.posts.Load()
	if err := bad.Write(ctx, []replication.Event{userEv(11, "u-11", "")}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v, want a 401", err)
	}
	if r.posts.Load() != start+1 {
		t.Fatalf("a 401 was retried: %d posts", r.posts.Load()-start)
	}
}

// TestHTTPSinkDown: a replica that does not answer is retried for RetryFor, then the error says
// so.
func TestHTTPSinkDown(t *testing.T) {
	hs := httptest.NewServer(http.NotFoundHandler())
	url := hs.URL
	hs.Close()
	s, err := New(Config{URL: url, Logger: quiet, RetryFor: 300 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Head(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Head of a closed port: %v", err)
	}
}

// sidecar reads the NATS stream into its own index, as crmauthz serve --replication-source does.
func sidecar(tb testing.TB, url, bucket string) *index.Index {
	tb.Helper()
	return tracedSidecar(tb, url, bucket, nil)
}

// tracedSidecar is sidecar with a Tracer (nil: off).
func tracedSidecar(tb testing.TB, url, bucket string, tr *tracing.Tracer) *index.Index {
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
	src, err := natssource.New(natssource.Config{URL: url, Stream: DefaultConfig().Stream, Subject: DefaultConfig().Subject, SnapshotBucket: bucket,
		Index: ix, Replicator: repl, Metrics: metrics.New(metrics.Config{}), Logger: quiet, Tracer: tr,
		PollInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(context.Background()) }()
	tb.Cleanup(func() { src.Close(); <-done })
	return ix
}

// TestNATSSink: the stream and bucket are created; a snapshot is an object plus a purge so the
// stream's next seq follows it; sidecars started before and after load it and the events after
// it; a second snapshot reaches a sidecar that is level, with no event after it; a gap is typed;
// a rewrite of events the stream holds is a no-op.
func TestNATSSink(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t, natstest.Options{})
	s, err := New(Config{URL: srv.URL(), Logger: quiet, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h, err := s.Head(ctx); err != nil || h != 0 {
		t.Fatalf("Head = %d, %v; want 0", h, err)
	}
	early := sidecar(t, srv.URL(), DefaultConfig().SnapshotBucket)
	if err := s.Snapshot(ctx, 3, snapshotOf("u-1", "u-2")); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx); err != nil || h != 3 {
		t.Fatalf("after the snapshot: Head = %d, %v; want 3", h, err)
	}
	evs := []replication.Event{userEv(4, "u-4", "t1"), userEv(5, "u-5", "t1"), userEv(6, "u-6", "")}
	if err := s.Write(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, evs); err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	if h, _ := s.Head(ctx); h != 6 {
		t.Fatalf("Head %d after a rewrite, want 6", h)
	}
	late := sidecar(t, srv.URL(), DefaultConfig().SnapshotBucket)
	for name, ix := range map[string]*index.Index{"early": early, "late": late} {
		waitFor(t, name+" sidecar at seq 6", func() bool { return ix.AppliedSeq() == 6 })
		if !hasUser(t, ix, "u-1") || !hasUser(t, ix, "u-5") {
			t.Fatalf("%s sidecar misses users", name)
		}
	}
	// A second snapshot (the connector rewrote its copy): a level sidecar loads it at once.
	if err := s.Snapshot(ctx, 10, snapshotOf("u-9")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second snapshot", func() bool { return early.AppliedSeq() == 10 })
	if hasUser(t, early, "u-1") || !hasUser(t, early, "u-9") {
		t.Fatal("the second snapshot did not replace the index")
	}
	if err := s.Snapshot(ctx, 9, snapshotOf()); err == nil {
		t.Fatal("a snapshot behind the stream was accepted")
	}
	err = s.Write(ctx, []replication.Event{userEv(12, "u-12", "")})
	var gap *GapError
	if !errors.As(err, &gap) || gap.Head != 10 {
		t.Fatalf("a gap: %v, want a *GapError with Head 10", err)
	}
	if err := s.Write(ctx, []replication.Event{userEv(11, "u-11", "")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "seq 11 on the late sidecar", func() bool { return late.AppliedSeq() == 11 && hasUser(t, late, "u-11") })

	// A snapshot interrupted after its purge (the stream at 20, empty): the retry completes it.
	js := natstest.JetStream(t, srv.URL())
	st, err := js.Stream(ctx, DefaultConfig().Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(21)); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshot(ctx, 20, snapshotOf("u-20")); err != nil {
		t.Fatalf("the retry of a purged snapshot: %v", err)
	}
	waitFor(t, "the snapshot at 20", func() bool { return late.AppliedSeq() == 20 && hasUser(t, late, "u-20") })
}

// TestNATSSinkAtomicTx: a transaction's events are published as one atomic batch: a stream
// created without atomic publishing is updated to allow it, and the messages land at their seqs.
func TestNATSSinkAtomicTx(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OLD", Subjects: []string{"old.events"}}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{URL: srv.URL(), Stream: "OLD", Subject: "old.events", Logger: quiet, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := []replication.Event{userEv(1, "u-1", ""), userEv(2, "u-2", "t"), userEv(3, "u-3", "t"), userEv(4, "u-4", "t"), userEv(5, "u-5", "")}
	if err := s.Write(ctx, evs); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "OLD")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.AllowAtomicPublish || info.State.LastSeq != 5 {
		t.Fatalf("stream: atomic %v, last seq %d; want true, 5", info.Config.AllowAtomicPublish, info.State.LastSeq)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := replication.DecodeEvent(m.Data, seq)
		if err != nil || *ev.User.ID != fmt.Sprintf("u-%d", seq) {
			t.Fatalf("seq %d: %s (%v)", seq, m.Data, err)
		}
		if batched := m.Header.Get("Nats-Batch-Id") != ""; batched != (seq >= 2 && seq <= 4) {
			t.Errorf("seq %d batched %v", seq, batched)
		}
	}
}
