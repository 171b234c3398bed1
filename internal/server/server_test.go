package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/strictjson"
	"github.com/crmauthz/crmauthz/policies"
)

// testServer is a Server over a real bbolt index and the real default policy.
type testServer struct {
	*Server
	ix       *index.Index
	decision http.Handler
	admin    http.Handler
}

// newConfig is what every server test builds: a fresh bbolt index holding
// snapshot (NDJSON; nil for an empty index), its replicator, the default
// policy and fresh metrics, as a Config ready for New.
func newConfig(tb testing.TB, snapshot io.Reader) Config {
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
	if snapshot != nil {
		if _, err := repl.LoadSnapshot(snapshot); err != nil {
			tb.Fatal(err)
		}
	}
	eng, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS})
	if err != nil {
		tb.Fatal(err)
	}
	return Config{Index: ix, Engine: eng, Replicator: repl, Metrics: metrics.New(metrics.Config{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func mustNew(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newTestServer(t testing.TB, world *dataset.World) *testServer {
	t.Helper()
	var snapshot io.Reader
	if world != nil {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(world.WriteSnapshot(pw, 1)) }()
		snapshot = pr
	}
	cfg := newConfig(t, snapshot)
	cfg.Token = []byte("tok")
	s := mustNew(t, cfg)
	return &testServer{Server: s, ix: cfg.Index, decision: s.DecisionHandler(), admin: s.AdminHandler()}
}

func serve(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestReplicationAuth(t *testing.T) {
	ts := newTestServer(t, nil)
	cases := []struct {
		name   string
		remote string
		hdr    map[string]string
		code   int
	}{
		{"right token", "10.0.0.8:5000", map[string]string{"Authorization": "Bearer tok"}, 200},
		{"scheme in lower case", "10.0.0.8:5000", map[string]string{"Authorization": "bearer tok"}, 200},
		{"no header", "127.0.0.1:5000", nil, 401},
		{"wrong token", "127.0.0.1:5000", map[string]string{"Authorization": "Bearer tok2"}, 401},
		{"prefix of the token", "127.0.0.1:5000", map[string]string{"Authorization": "Bearer to"}, 401},
		{"basic auth", "127.0.0.1:5000", map[string]string{"Authorization": "Basic dG9rOg=="}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/replication/status", nil)
			req.RemoteAddr = tc.remote
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			ts.admin.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.code)
			}
			if tc.code == 401 && !strings.Contains(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: %v", rec.Header())
			}
		})
	}
}

func TestReplicationWithoutTokenIsLoopbackOnly(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.cfg.Token = nil
	for _, tc := range []struct {
		remote string
		xff    string
		code   int
	}{
		{"127.0.0.1:4000", "", 200},
		{"[::1]:4000", "", 200},
		{"10.1.2.3:4000", "", 401},
		{"10.1.2.3:4000", "127.0.0.1", 401}, // X-Forwarded-For is not believed
	} {
		t.Run(tc.remote+"/"+tc.xff, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/replication/status", nil)
			req.RemoteAddr = tc.remote
			if tc.xff != "" {
				req.Header.Set("X-Forwarded-For", tc.xff)
			}
			rec := httptest.NewRecorder()
			ts.admin.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("got %d, want %d", rec.Code, tc.code)
			}
		})
	}
}

func TestErrorTableCoversServerErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		name string
	}{
		{&replication.GapError{AppliedSeq: 3, Want: 4, Got: 6}, 409, "sequence_gap"},
		{&replication.InvalidEventError{Index: 2, Msg: "x"}, 422, "invalid_event"},
		{&replication.SnapshotLineError{Line: 5, Msg: "x"}, 422, "invalid_snapshot"},
		{&replication.MalformedError{Msg: "x"}, 400, "malformed_json"},
		{strictErrOf(t, `{"a":1,"a":2}`), 400, "invalid_request"},
		{strictErrOf(t, `{"A":1}`), 400, "invalid_request"},
		{strictErrOf(t, `{"a":"x"}`), 400, "invalid_request"},
		{strictErrOf(t, `{"a":`), 400, "malformed_json"},
		{strictErrOf(t, ``), 400, "malformed_json"},
		{strictErrOf(t, `{} {}`), 400, "malformed_json"},
		{strictErrOf(t, "{\"b\":\"\xff\"}"), 400, "malformed_json"},
		{strictErrOf(t, `{"b":`+strings.Repeat("[", 10001)+strings.Repeat("]", 10001)+`}`), 400, "malformed_json"},
		{strictjson.UnmarshalRead([]byte(`{"a":`), &http.MaxBytesError{Limit: 5}, new(struct{ A int })), 413, "payload_too_large"},
		// wrapped: the outer error decides (an event's or a line's own
		// decoding error is 422 with its index or line, never a 400)
		{&replication.InvalidEventError{Index: 1, Msg: "x", Err: strictErrOf(t, `{"a":1,"a":2}`)}, 422, "invalid_event"},
		{&replication.InvalidEventError{Index: 1, Msg: "x", Err: strictErrOf(t, "{\"b\":\"\xff\"}")}, 422, "invalid_event"},
		{&replication.SnapshotLineError{Line: 2, Msg: "x", Err: strictErrOf(t, `{"A":1}`)}, 422, "invalid_snapshot"},
		{&replication.SnapshotLineError{Line: 2, Msg: "x", Err: strictErrOf(t, `{"a":`)}, 422, "invalid_snapshot"},
		{replication.ErrSnapshotInProgress, 503, "snapshot_in_progress"},
		{replication.ErrTooManyEvents, 413, "payload_too_large"},
		{&http.MaxBytesError{Limit: 10}, 413, "payload_too_large"},
		{index.ErrClosed, 503, "index_closed"},
		{io.ErrUnexpectedEOF, 400, "truncated"},
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), 400, "truncated"},
		{errors.New("something else"), 500, "internal_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, err := range []error{tc.err, fmt.Errorf("handler: %w", tc.err)} {
				ae := toAPIError(err)
				if ae.Status != tc.code || ae.Code != tc.name || ae.Message == "" {
					t.Fatalf("%v: got %+v", err, ae)
				}
				// The answer keeps its cause: errors.Is still finds it.
				if !errors.Is(ae, tc.err) {
					t.Errorf("%v: errors.Is(answer, cause) is false", err)
				}
			}
		})
	}
}

// TestErrorTableKeepsAPIErrors: an apiError, wrapped or not, is answered as it is, and unwraps
// to its cause (no cycle through the wrapper).
func TestErrorTableKeepsAPIErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		cause      error
		causeFound bool
	}{
		{"evaluation error", evalError(index.ErrClosed), 500, errcode.EvaluationError, index.ErrClosed, true},
		{"evaluation timeout", evalError(fmt.Errorf("eval: %w", policy.ErrEvalTimeout)), 500, errcode.EvaluationTimeout, policy.ErrEvalTimeout, true},
		{"wrapped apiError", fmt.Errorf("x: %w", newError(http.StatusNotFound, errcode.NotFound, "no")), 404, errcode.NotFound, index.ErrClosed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae := toAPIError(tc.err)
			if ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("got %+v, want %d %s", ae, tc.status, tc.code)
			}
			if got := errors.Is(ae, tc.cause); got != tc.causeFound {
				t.Errorf("errors.Is(answer, %v) = %v, want %v", tc.cause, got, tc.causeFound)
			}
		})
	}
}

// strictErrOf is the strict decoder's error for doc decoded into
// {"a": int, "b": any}.
func strictErrOf(tb testing.TB, doc string) error {
	tb.Helper()
	var v struct {
		A int `json:"a"`
		B any `json:"b"`
	}
	err := strictjson.Unmarshal([]byte(doc), &v)
	if err == nil {
		tb.Fatalf("%q decoded", doc)
	}
	return err
}

// TestDecisionsDuringReplication runs decisions while batches change the
// facts they read, under -race: every answer is one of the two possible ones.
func TestDecisionsDuringReplication(t *testing.T) {
	ts := newTestServer(t, nil)
	auth := map[string]string{"Authorization": "Bearer tok"}
	rec := serve(ts.admin, http.MethodPost, "/v1/replication/events", `{"events": [
	  {"seq": 1, "op": "user.upsert", "user": {"id": "u-1", "role": "user", "location_ids": ["l"], "assigned_data_only": true}},
	  {"seq": 2, "op": "user.upsert", "user": {"id": "u-2", "role": "user", "location_ids": ["l"], "assigned_data_only": true}},
	  {"seq": 3, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "l", "owner": "u-1"}}]}`, auth)
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 100)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rec := serve(ts.decision, http.MethodPost, "/v1/decision", `{"subject":"u-2","action":"edit","resource":{"type":"contact","id":"c-1"}}`, nil)
				var d struct {
					Allow      bool
					Reason     string
					AppliedSeq uint64 `json:"applied_seq"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != 200 {
					errs <- rec.Body.String()
					return
				}
				// Odd seqs from 4 on add u-2 as a follower, even ones remove it.
				follows := d.AppliedSeq >= 4 && d.AppliedSeq%2 == 0
				if follows && (!d.Allow || d.Reason != "follower") || !follows && (d.Allow || d.Reason != "not_assigned") {
					errs <- rec.Body.String()
					return
				}
			}
		}()
	}
	var b bytes.Buffer
	for seq := 4; seq < 200; seq++ {
		op := "follower.add"
		if seq%2 == 1 {
			op = "follower.remove"
		}
		b.Reset()
		b.WriteString(`{"events":[{"seq":`)
		b.WriteString(strconv.Itoa(seq))
		b.WriteString(`,"op":"` + op + `","type":"contact","id":"c-1","user_id":"u-2"}]}`)
		if rec := serve(ts.admin, http.MethodPost, "/v1/replication/events", b.String(), auth); rec.Code != 200 {
			t.Fatalf("seq %d: %d %s", seq, rec.Code, rec.Body)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("decision inconsistent with its applied_seq: %s", e)
	}
}

// BenchmarkDecision measures one decision in-process, with the facts read
// from a bbolt index of 100,000 records: Engine only (index read tx +
// evaluation), and the whole handler (parse, evaluate, write) without a network.
func BenchmarkDecision(b *testing.B) {
	w := dataset.New(dataset.Config{Records: 100_000, Users: 10_000})
	ts := newTestServer(b, &w)
	reqs := make([]dataset.Request, 4096)
	bodies := make([]string, len(reqs))
	for i := range reqs {
		reqs[i] = w.RequestAt(i)
		bodies[i] = string(reqs[i].AppendJSON(nil))
	}
	uncached, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		b.Fatal(err)
	}
	// "cached" cycles through 4096 requests, so after the first round every
	// decision is a cache hit (facts re-read and compared, no evaluation);
	// "uncached" evaluates the policy every time.
	for _, eng := range []struct {
		name string
		e    *policy.Engine
	}{{"engine+index/cached", ts.eng}, {"engine+index/uncached", uncached}} {
		b.Run(eng.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r := reqs[i%len(reqs)]
				in := policy.Input{Subject: r.Subject, Action: r.Action, ResourceType: r.Type, ResourceID: r.ID, Target: r.Target, HasTarget: r.Target != ""}
				err := ts.ix.View(func(tx *index.ReadTx) error {
					_, _, err := eng.e.Decide(b.Context(), tx, in)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			req := httptest.NewRequest(http.MethodPost, "/v1/decision", strings.NewReader(bodies[i%len(bodies)]))
			rec := httptest.NewRecorder()
			ts.decision.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatal(rec.Body.String())
			}
		}
	})
	b.Run("batch100", func(b *testing.B) {
		var sb strings.Builder
		sb.WriteString(`{"subject":"u-5","checks":[`)
		for i := 0; i < 100; i++ {
			if i > 0 {
				sb.WriteByte(',')
			}
			r := reqs[i]
			sb.WriteString(`{"action":"` + r.Action + `","resource":{"type":"` + r.Type + `","id":"` + r.ID + `"}}`)
		}
		sb.WriteString(`]}`)
		body := sb.String()
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rec := serve(ts.decision, http.MethodPost, "/v1/decisions", body, nil)
			if rec.Code != 200 {
				b.Fatal(rec.Body.String())
			}
		}
	})
}

// testEvalTimeout is the EvalTimeout of the engines of tests that do not
// test it: generous, for a loaded machine under the race detector (the
// bound has its own test, evaltimeout_test.go).
const testEvalTimeout = time.Minute

func TestIsLoopbackAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:80", true},
		{"127.0.0.2:80", true},
		{"[::1]:80", true},
		{"localhost:8181", true},
		{"10.0.0.1:80", false},
		{"[::]:80", false},
		{":8181", false},
		{"example.test:80", false},
		{"127.0.0.1", false},
		{"", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			if got := IsLoopbackAddr(tc.addr); got != tc.want {
				t.Errorf("IsLoopbackAddr(%q) = %v, want %v", tc.addr, got, tc.want)
			}
		})
	}
}
