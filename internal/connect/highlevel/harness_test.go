package highlevel

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/crmauthz/crmauthz/internal/replicatest"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// sidecar is a real crmauthz (bbolt index, default policy) over loopback HTTP.
type sidecar struct {
	decision, admin *httptest.Server
}

func newSidecar(tb testing.TB) *sidecar { return newSidecarFrom(tb, "") }

// newSidecarFrom is a sidecar that reads the NATS stream at natsURL (as crmauthz serve
// --replication-source does), or is fed over its replication API when natsURL is "".
func newSidecarFrom(tb testing.TB, natsURL string) *sidecar {
	tb.Helper()
	rep := replicatest.New(tb, replicatest.Config{})
	ix, repl, m, s := rep.Index, rep.Replicator, rep.Metrics, rep.Server
	if natsURL != "" {
		src, err := natssource.New(natssource.Config{URL: natsURL, Stream: sink.DefaultConfig().Stream, Subject: sink.DefaultConfig().Subject,
			SnapshotBucket: sink.DefaultConfig().SnapshotBucket, Index: ix, Replicator: repl, Metrics: m, Logger: slog.New(slog.DiscardHandler),
			PollInterval: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		if err != nil {
			tb.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- src.Run(context.Background()) }()
		tb.Cleanup(func() { src.Close(); <-done })
	}
	sc := &sidecar{decision: httptest.NewServer(s.DecisionHandler()), admin: httptest.NewServer(s.AdminHandler())}
	tb.Cleanup(sc.decision.Close)
	tb.Cleanup(sc.admin.Close)
	return sc
}

// model reads the sidecar's index as a model (GET /v1/replication/snapshot).
func (s *sidecar) model(tb testing.TB) (uint64, *refmodel.Model) {
	tb.Helper()
	resp, err := http.Get(s.admin.URL + "/v1/replication/snapshot")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	seq, m, err := refmodel.ReadSnapshot(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return seq, m
}

func (s *sidecar) decide(tb testing.TB, subject, action, typ, id string) (bool, string) {
	tb.Helper()
	raw, _ := json.Marshal(map[string]any{"subject": subject, "action": action, "resource": map[string]string{"type": typ, "id": id}})
	resp, err := http.Post(s.decision.URL+"/v1/decision", "application/json", bytes.NewReader(raw))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		Allow  bool   `json:"allow"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != 200 {
		tb.Fatalf("decision: %d %v", resp.StatusCode, err)
	}
	return d.Allow, d.Reason
}

// testSink is the shared sink (internal/connect/sink) with injected write failures, and a
// destination the test can change.
type testSink struct {
	mu    sync.Mutex
	inner sink.Sink
	fail  int // the next fail writes fail (before reaching the sink)
}

func newTestSink(tb testing.TB, url string) *testSink {
	s := &testSink{}
	s.point(tb, url)
	return s
}

// point makes the sink write to url from now on.
func (s *testSink) point(tb testing.TB, url string) {
	tb.Helper()
	inner, err := sink.New(sink.Config{URL: url, Logger: slog.New(slog.DiscardHandler), RetryFor: 2 * time.Second, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { inner.Close() })
	s.mu.Lock()
	s.inner = inner
	s.mu.Unlock()
}

func (s *testSink) get() sink.Sink {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inner
}

func (s *testSink) failNext(n int) {
	s.mu.Lock()
	s.fail = n
	s.mu.Unlock()
}

func (s *testSink) Head(ctx context.Context) (uint64, error) { return s.get().Head(ctx) }

func (s *testSink) Write(ctx context.Context, evs []replication.Event) error {
	s.mu.Lock()
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		return fmt.Errorf("injected sink failure")
	}
	s.mu.Unlock()
	return s.get().Write(ctx, evs)
}

func (s *testSink) Snapshot(ctx context.Context, seq uint64, write func(io.Writer) error) error {
	return s.get().Snapshot(ctx, seq, write)
}

func (s *testSink) Close() error { return nil }

// keys are the test's webhook signing keys.
type keys struct {
	ed  ed25519.PrivateKey
	rsa *rsa.PrivateKey
}

var testKeys = sync.OnceValue(func() keys {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return keys{ed: ed, rsa: rk}
})

// env is a fake HighLevel, a real crmauthz and the connector's configuration.
type env struct {
	fake *fakeHL
	side *sidecar
	sink *testSink
	cfg  Config
}

func newEnv(tb testing.TB, locs int) *env {
	tb.Helper()
	e := &env{fake: newFake(tb), side: newSidecar(tb)}
	e.sink = newTestSink(tb, e.side.admin.URL)
	dir := tb.TempDir()
	var locations []string
	for l := range locs {
		loc := fmt.Sprintf("loc-%d", l)
		locations = append(locations, loc)
		tok := "tok-" + loc
		e.fake.Tokens[tok] = loc
		e.fake.Locations[loc] = &hlfake.Location{ID: loc, CompanyID: e.fake.Company, Name: "Location " + loc}
		if err := os.WriteFile(filepath.Join(dir, loc), []byte(tok+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	k := testKeys()
	cfg := DefaultConfig()
	cfg.APIURL = e.fake.srv.URL
	cfg.TokenDir = dir
	cfg.CompanyID = e.fake.Company
	cfg.LocationIDs = locations
	cfg.WebhookPublicKey = k.ed.Public().(ed25519.PublicKey)
	cfg.WebhookLegacyKey = &k.rsa.PublicKey
	cfg.StateDir = tb.TempDir()
	cfg.Sink = e.sink
	cfg.Logger = slog.New(slog.DiscardHandler)
	e.cfg = cfg
	return e
}

// running is a connector running in the test, with its listeners.
type running struct {
	c              *Connector
	webhook, admin *httptest.Server
	cancel         context.CancelFunc
	done           chan error
}

func start(tb testing.TB, cfg Config) *running {
	tb.Helper()
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, webhook: httptest.NewServer(c.WebhookHandler()), admin: httptest.NewServer(c.AdminHandler()),
		cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	tb.Cleanup(r.stop)
	return r
}

// stop ends the connector abruptly: its listeners close, Run's context is cancelled mid-work,
// and the state file is closed (only committed bbolt transactions survive, as after a kill).
func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.webhook.Close()
	r.admin.Close()
	r.cancel()
	<-r.done
	r.c.Close()
	r.cancel = nil
}

func eventually(tb testing.TB, what string, f func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) waitReady(tb testing.TB) {
	tb.Helper()
	eventually(tb, "the connector to be ready", func() bool {
		resp, err := http.Get(r.admin.URL + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// sign returns the headers of a webhook body signed with the test's Ed25519 key.
func sign(body []byte) map[string]string {
	return map[string]string{"X-GHL-Signature": base64.StdEncoding.EncodeToString(ed25519.Sign(testKeys().ed, body))}
}

func signRSA(tb testing.TB, body []byte) map[string]string {
	sum := sha256.Sum256(body)
	sig, err := rsa.SignPKCS1v15(rand.Reader, testKeys().rsa, crypto.SHA256, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]string{"X-WH-Signature": base64.StdEncoding.EncodeToString(sig)}
}

var webhookN struct {
	sync.Mutex
	n int
}

// hook is a webhook body of typ for object id in loc, stamped now, with a new webhookId.
func hook(typ, loc, id string) []byte {
	webhookN.Lock()
	webhookN.n++
	n := webhookN.n
	webhookN.Unlock()
	b, _ := json.Marshal(map[string]any{"type": typ, "locationId": loc, "id": id, "webhookId": fmt.Sprintf("wh-%d-%d", time.Now().UnixNano(), n),
		"timestamp": time.Now().UTC().Format(time.RFC3339), "firstName": "x"})
	return b
}

// post sends a webhook body with headers and returns the status and the decoded reply.
func post(tb testing.TB, url string, body []byte, hdr map[string]string) (int, map[string]any) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+WebhookPath, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("reply %q: %v", raw, err)
	}
	return resp.StatusCode, out
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func sameModel(tb testing.TB, got, want *refmodel.Model) bool {
	tb.Helper()
	return got.Canonical() == want.Canonical()
}

func diffModels(got, want *refmodel.Model) string {
	g, w := strings.Split(got.Canonical(), "\n"), strings.Split(want.Canonical(), "\n")
	gs, ws := map[string]bool{}, map[string]bool{}
	for _, l := range g {
		gs[l] = true
	}
	for _, l := range w {
		ws[l] = true
	}
	var b strings.Builder
	n := 0
	for _, l := range w {
		if !gs[l] && n < 5 {
			fmt.Fprintf(&b, "missing: %s\n", l)
			n++
		}
	}
	for _, l := range g {
		if !ws[l] && n < 10 {
			fmt.Fprintf(&b, "extra:   %s\n", l)
			n++
		}
	}
	return b.String()
}
