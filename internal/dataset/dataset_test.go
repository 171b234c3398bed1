package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestRecordsKeepTheModelsInvariants(t *testing.T) {
	w := New(Config{Records: 5000, Users: 600, Locations: 5})
	for i := 0; i < w.Config().Records; i++ {
		r := w.RecordAt(i)
		if n := len(r.Followers); n < 1 || n > 10 {
			t.Fatalf("record %d has %d followers", i, n)
		}
		seen := map[string]bool{r.Owner: true}
		for _, f := range r.Followers {
			if seen[f] {
				t.Fatalf("record %d: follower %s repeats or is the owner (%+v)", i, f, r)
			}
			seen[f] = true
		}
		for u := range seen {
			if u == "" {
				continue
			}
			n, err := strconv.Atoi(strings.TrimPrefix(u, "u-"))
			if err != nil {
				t.Fatal(err)
			}
			if got := w.UserAt(n).Location; got != r.Location {
				t.Fatalf("record %d in %s names %s of %s", i, r.Location, u, got)
			}
		}
	}
}

func TestSnapshotAndRequestsAreValidJSON(t *testing.T) {
	w := New(Config{Records: 300, Users: 120})
	var buf bytes.Buffer
	if err := w.WriteSnapshot(&buf, 9); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	lines := 0
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %d: %v: %s", lines+1, err, sc.Text())
		}
		lines++
	}
	if want := 1 + 120 + 300; lines != want {
		t.Fatalf("%d lines, want %d", lines, want)
	}
	actions := map[string]bool{}
	for i := 0; i < 2000; i++ {
		r := w.RequestAt(i)
		var v struct {
			Subject, Action string
			Resource        struct{ Type, ID string }
		}
		if err := json.Unmarshal(r.AppendJSON(nil), &v); err != nil || v.Subject == "" || v.Resource.ID == "" {
			t.Fatalf("request %d: %v %+v", i, err, v)
		}
		actions[v.Action] = true
	}
	if len(actions) != len(allActions) {
		t.Fatalf("the mix has actions %v", actions)
	}
}

// TestNewFillsDefaults: a zero Config is DefaultConfig; a field given is kept, and Users grows to
// 12 per location.
func TestNewFillsDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in, out Config
	}{
		{"zero", Config{}, DefaultConfig()},
		{"given", Config{Records: 50, Users: 60, Locations: 5, OpportunityEvery: 2}, Config{Records: 50, Users: 60, Locations: 5, OpportunityEvery: 2}},
		{"users raised", Config{Records: 10, Users: 1, Locations: 2}, Config{Records: 10, Users: 24, Locations: 2, OpportunityEvery: 5}},
		{"negative", Config{Records: -1, Users: -1, Locations: -1, OpportunityEvery: -1}, DefaultConfig()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := New(tc.in).Config(); got != tc.out {
				t.Errorf("New(%+v).Config() = %+v, want %+v", tc.in, got, tc.out)
			}
		})
	}
}
