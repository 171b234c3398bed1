package policy

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/policies"
)

// golden is the format of testdata/decisions.json, shared with the server's
// and the end-to-end tests.
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

func (c goldenCase) input() Input {
	in := Input{
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
	b, err := os.ReadFile(filepath.Join("testdata", "decisions.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatalf("decisions.json: %v", err)
	}
	if len(g.Cases) == 0 {
		tb.Fatal("decisions.json: no cases")
	}
	return g
}

// memFacts is an in-memory Facts holding fixed JSON documents.
type memFacts struct {
	users   map[string][]byte
	records map[string][]byte // key: type NUL id
	err     error             // returned by every read when set
}

func (f *memFacts) UserJSON(id string) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.users[id], nil
}

func (f *memFacts) RecordJSON(typ, id string) ([]byte, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.records[typ+"\x00"+id], nil
}

func newMemFacts(tb testing.TB, g golden) *memFacts {
	tb.Helper()
	f := &memFacts{users: map[string][]byte{}, records: map[string][]byte{}}
	for _, u := range g.Users {
		var k struct{ ID string }
		if err := json.Unmarshal(u, &k); err != nil || k.ID == "" {
			tb.Fatalf("bad user %s: %v", u, err)
		}
		f.users[k.ID] = u
	}
	for _, r := range g.Records {
		var k struct{ Type, ID string }
		if err := json.Unmarshal(r, &k); err != nil || k.ID == "" || k.Type == "" {
			tb.Fatalf("bad record %s: %v", r, err)
		}
		f.records[k.Type+"\x00"+k.ID] = r
	}
	return f
}

func newDefaultEngine(tb testing.TB) *Engine {
	tb.Helper()
	e, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS})
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

// defaultPolicyFiles returns the embedded default policy by base name.
func defaultPolicyFiles(tb testing.TB, withTests bool) map[string]string {
	tb.Helper()
	files := map[string]string{}
	for _, name := range []string{"authz.rego", "config.rego", "authz_test.rego"} {
		if !withTests && name == "authz_test.rego" {
			continue
		}
		b, err := policies.FS.ReadFile("crmauthz/" + name)
		if err != nil {
			tb.Fatal(err)
		}
		files[name] = string(b)
	}
	return files
}

// testEvalTimeout is the EvalTimeout of the engines of tests that do not
// test it: generous, for a loaded machine under the race detector (the
// bound has its own tests, limits_test.go).
const testEvalTimeout = time.Minute

// allDefaultFiles returns every file of the embedded default policy by base name.
func allDefaultFiles(tb testing.TB) map[string]string {
	tb.Helper()
	entries, err := fs.ReadDir(policies.FS, "crmauthz")
	if err != nil {
		tb.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := fs.ReadFile(policies.FS, "crmauthz/"+e.Name())
		if err != nil {
			tb.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}
