package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

// goldenCase is one case of internal/policy/testdata/decisions.json.
type goldenCase struct {
	Name   string          `json:"name"`
	Input  json.RawMessage `json:"input"`
	Allow  bool            `json:"allow"`
	Reason string          `json:"reason"`
	in     policy.Input
}

// newGoldenServer is a test server whose index holds the facts of the golden
// decision cases, and the cases with their policy inputs.
func newGoldenServer(tb testing.TB) (*testServer, []goldenCase) {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "policy", "testdata", "decisions.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g struct {
		Users   []json.RawMessage `json:"users"`
		Records []json.RawMessage `json:"records"`
		Cases   []goldenCase      `json:"cases"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		tb.Fatal(err)
	}
	var snap bytes.Buffer
	snap.WriteString(`{"seq": 1}` + "\n")
	for _, u := range g.Users {
		snap.WriteString(`{"user": ` + string(u) + "}\n")
	}
	for _, r := range g.Records {
		snap.WriteString(`{"record": ` + string(r) + "}\n")
	}
	ts := newTestServer(tb, nil)
	if _, err := ts.repl.LoadSnapshot(&snap); err != nil {
		tb.Fatal(err)
	}
	for i := range g.Cases {
		c := &g.Cases[i]
		var in struct {
			Subject, Action string
			Resource        struct{ Type, ID string }
			Target          *string
		}
		if err := json.Unmarshal(c.Input, &in); err != nil {
			tb.Fatal(err)
		}
		c.in = policy.Input{Subject: in.Subject, Action: in.Action, ResourceType: in.Resource.Type, ResourceID: in.Resource.ID}
		if in.Target != nil {
			c.in.Target, c.in.HasTarget = *in.Target, true
		}
	}
	return ts, g.Cases
}

// BenchmarkDecideGolden is one decision in-process, engine and bbolt index
// (one read transaction, the policy evaluated or answered from the decision
// cache), no HTTP, over the golden decision cases in turn. "cached": after the
// first round every case hits the exact decision cache; "uncached": the policy
// is evaluated every time, by the IR interpreter ("uncached-topdown": by
// topdown).
func BenchmarkDecideGolden(b *testing.B) {
	ts, cases := newGoldenServer(b)
	uncached, err := policy.New(policy.Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: policy.EvaluatorIR})
	if err != nil {
		b.Fatal(err)
	}
	topdown, err := policy.New(policy.Config{FS: policies.FS, DecisionCacheSlots: -1, Evaluator: policy.EvaluatorTopdown})
	if err != nil {
		b.Fatal(err)
	}
	for _, eng := range []struct {
		name string
		e    *policy.Engine
	}{{"cached", ts.eng}, {"uncached", uncached}, {"uncached-topdown", topdown}} {
		// Every case decides as the golden file says, through this path.
		for _, c := range cases {
			var d policy.Decision
			err := ts.ix.View(func(tx *index.ReadTx) error {
				var err error
				d, _, err = eng.e.Decide(b.Context(), tx, c.in)
				return err
			})
			if err != nil || d.Allow != c.Allow || d.Reason != c.Reason {
				b.Fatalf("%s: %+v %v, want %v %s", c.Name, d, err, c.Allow, c.Reason)
			}
		}
		b.Run(eng.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				in := cases[i%len(cases)].in
				i++
				err := ts.ix.View(func(tx *index.ReadTx) error {
					_, _, err := eng.e.Decide(b.Context(), tx, in)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(eng.name+"/batch100", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				err := ts.ix.View(func(tx *index.ReadTx) error {
					for i := 0; i < 100; i++ {
						if _, _, err := eng.e.Decide(b.Context(), tx, cases[i%len(cases)].in); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandlerGolden is POST /v1/decision and a POST /v1/decisions of 100
// checks through the whole Gin handler (read, parse, decide, count, write),
// without a network, over the golden cases.
func BenchmarkHandlerGolden(b *testing.B) {
	ts, all := newGoldenServer(b)
	var cases []goldenCase // those the API takes (it refuses an empty subject or action with a 400)
	var bodies []string
	for _, c := range all {
		if c.in.Subject != "" && c.in.Action != "" {
			cases = append(cases, c)
			bodies = append(bodies, string(c.Input))
		}
	}
	b.Run("decision", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			rec := serve(ts.decision, http.MethodPost, "/v1/decision", bodies[i%len(bodies)], nil)
			i++
			if rec.Code != 200 {
				b.Fatal(rec.Body.String())
			}
		}
	})
	var sb strings.Builder
	sb.WriteString(`{"subject":"u-fol","checks":[`)
	for i := 0; i < 100; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		c := cases[i%len(cases)].in
		sb.WriteString(`{"action":"` + c.Action + `","resource":{"type":"` + c.ResourceType + `","id":"` + c.ResourceID + `"}`)
		if c.HasTarget {
			sb.WriteString(`,"target":"` + c.Target + `"`)
		}
		sb.WriteByte('}')
	}
	sb.WriteString(`]}`)
	batch := sb.String()
	b.Run("batch100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rec := serve(ts.decision, http.MethodPost, "/v1/decisions", batch, nil); rec.Code != 200 {
				b.Fatal(rec.Body.String())
			}
		}
	})
}

// BenchmarkDecisionHTTP is POST /v1/decision over loopback HTTP with
// keep-alive connections from parallel clients (client and server in this
// process, on the same cores), over the load mix of a 100,000-record world:
// the path to profile (-cpuprofile) for the HTTP handler.
func BenchmarkDecisionHTTP(b *testing.B) {
	w := dataset.New(dataset.Config{Records: 100_000, Users: 10_000})
	ts := newTestServer(b, &w)
	srv := httptest.NewServer(ts.decision)
	defer srv.Close()
	url := srv.URL + "/v1/decision"
	bodies := make([][]byte, 1<<16) // more distinct requests than the cache remembers at once
	for i := range bodies {
		bodies[i] = w.RequestAt(i).AppendJSON(nil)
	}
	postParallel(b, url, bodies)
}
