package authoring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/policies"
)

// golden is the part of internal/policy/testdata/decisions.json these tests
// use (the format is the policy package's, shared with the server's tests).
type golden struct {
	Users   []json.RawMessage `json:"users"`
	Records []json.RawMessage `json:"records"`
	Cases   []goldenCase      `json:"cases"`
}

type goldenCase struct {
	Name  string `json:"name"`
	Input struct {
		Subject  string `json:"subject"`
		Action   string `json:"action"`
		Resource struct {
			Type string `json:"type"`
			ID   string `json:"id"`
		} `json:"resource"`
		Target *string `json:"target,omitempty"`
	} `json:"input"`
	Allow  bool   `json:"allow"`
	Reason string `json:"reason"`
}

func (c goldenCase) input() policy.Input {
	in := policy.Input{
		Subject:      c.Input.Subject,
		Action:       c.Input.Action,
		ResourceType: c.Input.Resource.Type,
		ResourceID:   c.Input.Resource.ID,
	}
	if c.Input.Target != nil {
		in.Target, in.HasTarget = *c.Input.Target, true
	}
	return in
}

func loadGolden(tb testing.TB) golden {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "decisions.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil || len(g.Cases) == 0 {
		tb.Fatalf("decisions.json: %v (%d cases)", err, len(g.Cases))
	}
	return g
}

// memFacts is an in-memory policy.Facts holding fixed JSON documents.
type memFacts struct {
	docs map[string][]byte // key: id, or type NUL id
	err  error             // returned by every read when set
}

func (f *memFacts) UserJSON(id string) ([]byte, error) { return f.docs[id], f.err }

func (f *memFacts) RecordJSON(typ, id string) ([]byte, error) {
	return f.docs[typ+"\x00"+id], f.err
}

func newMemFacts(tb testing.TB, g golden) *memFacts {
	tb.Helper()
	f := &memFacts{docs: map[string][]byte{}}
	for _, doc := range append(g.Users, g.Records...) {
		var k struct{ Type, ID string }
		if err := json.Unmarshal(doc, &k); err != nil || k.ID == "" {
			tb.Fatalf("bad fact %s: %v", doc, err)
		}
		key := k.ID
		if k.Type != "" {
			key = k.Type + "\x00" + k.ID
		}
		f.docs[key] = doc
	}
	return f
}

func newDefaultEngine(tb testing.TB) *policy.Engine {
	tb.Helper()
	e, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return e
}

// writeFiles writes name -> content under dir, creating directories.
func writeFiles(tb testing.TB, dir string, files map[string]string) {
	tb.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// defaultPolicyFiles returns the embedded default policy's decision files
// (and its tests, with withTests) by base name.
func defaultPolicyFiles(tb testing.TB, withTests bool) map[string]string {
	tb.Helper()
	all := allDefaultFiles(tb)
	files := map[string]string{"authz.rego": all["authz.rego"], "config.rego": all["config.rego"]}
	if withTests {
		files["authz_test.rego"] = all["authz_test.rego"]
	}
	return files
}

// testEvalTimeout is the EvalTimeout of the engines of these tests:
// generous, for a loaded machine under the race detector.
const testEvalTimeout = time.Minute
