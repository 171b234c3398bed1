package policy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/crmauthz/crmauthz/policies"
)

func TestPartialView(t *testing.T) {
	e := newDefaultEngine(t)
	f := &memFacts{users: map[string][]byte{
		"admin":  []byte(`{"id":"admin","role":"admin","location_ids":["loc-1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`),
		"free":   []byte(`{"id":"free","role":"user","location_ids":["loc-1"],"assigned_data_only":false,"contacts_enabled":true,"opportunities_enabled":true}`),
		"rst":    []byte(`{"id":"rst","role":"user","location_ids":["loc-1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`),
		"nocont": []byte(`{"id":"nocont","role":"admin","location_ids":["loc-1"],"assigned_data_only":false,"contacts_enabled":false,"opportunities_enabled":true}`),
	}}
	// The location and the record type are the translator's to fold
	// (internal/filter): here the branches stay conditional on them.
	tests := []struct {
		subject, typ, loc string
		want              string
	}{
		{"admin", "contact", "loc-1", "always"},
		{"free", "opportunity", "loc-1", "always"},
		{"rst", "contact", "loc-1", "conditional conditional never"},
		{"nocont", "contact", "loc-1", "always"},
		{"ghost", "contact", "loc-1", "never"},
		{"admin", "invoice", "loc-1", "always"},
	}
	for _, tt := range tests {
		t.Run(tt.subject+"/"+tt.typ+"/"+tt.loc, func(t *testing.T) {
			p, rev, err := e.PartialView(context.Background(), f, FilterInput{Subject: tt.subject, Type: tt.typ, LocationID: tt.loc})
			if err != nil {
				t.Fatal(err)
			}
			if rev != e.Revision() || len(p.Unknowns) != 1 || p.Unknowns[0].String() != "data.crmauthz.record" {
				t.Fatalf("revision %s, unknowns %v", rev, p.Unknowns)
			}
			if got := shape(p); got != tt.want {
				t.Errorf("branches %v: %s, want %s", p.Branches, got, tt.want)
			}
		})
	}
}

// shape summarises a partial view: the branches that can allow, each as
// "always" or "conditional" (never: none); branches that deny are left out,
// except that a deny that always applies ends the list.
func shape(p *Partial) string {
	var out []string
	for _, b := range p.Branches {
		switch {
		case len(b.Allow) > 0 && len(b.Allow[0]) == 0:
			out = append(out, "always")
		case len(b.Allow) > 0:
			out = append(out, "conditional")
		case len(b.When[0]) == 0:
			out = append(out, "never")
		}
	}
	return strings.Join(out, " ")
}

func TestPartialViewErrors(t *testing.T) {
	t.Run("no entry point", func(t *testing.T) {
		dir := t.TempDir()
		files := defaultPolicyFiles(t, false)
		files["authz.rego"] = strings.ReplaceAll(strings.ReplaceAll(files["authz.rego"], "record", "rec0rd"), "crm.rec0rd", "crm.record")
		writeFiles(t, dir, files)
		e, err := New(Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.PartialView(context.Background(), &memFacts{}, FilterInput{Subject: "u", Type: "contact", LocationID: "l"}); !errors.Is(err, ErrNoViewFilter) {
			t.Errorf("err %v, want ErrNoViewFilter", err)
		}
	})
	t.Run("two decision rules", func(t *testing.T) {
		dir := t.TempDir()
		files := defaultPolicyFiles(t, false)
		files["more.rego"] = "package crmauthz\n\ndecision := {\"allow\": true, \"reason\": \"x\"} if input.subject == \"root\"\n"
		writeFiles(t, dir, files)
		e, err := New(Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.PartialView(context.Background(), &memFacts{}, FilterInput{Subject: "u", Type: "contact", LocationID: "l"}); err == nil || !errors.Is(err, ErrFilterUnderivable) || !strings.Contains(err.Error(), "one rule and its else chain") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("index error", func(t *testing.T) {
		e := newDefaultEngine(t)
		boom := errors.New("boom")
		if _, _, err := e.PartialView(context.Background(), &memFacts{err: boom}, FilterInput{Subject: "u", Type: "contact", LocationID: "l"}); !errors.Is(err, boom) {
			t.Errorf("err %v, want the index's error", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		e := newDefaultEngine(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := e.PartialView(ctx, &memFacts{}, FilterInput{Subject: "u", Type: "contact", LocationID: "l"}); !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
	})
}

// A cached partial evaluation is used only while the facts it read are the
// same: a user who becomes an admin gets "always" at once.
func TestPartialViewCacheFollowsFacts(t *testing.T) {
	e := newDefaultEngine(t)
	f := &memFacts{users: map[string][]byte{
		"u": []byte(`{"id":"u","role":"user","location_ids":["loc-1"],"assigned_data_only":true}`),
	}}
	in := FilterInput{Subject: "u", Type: "contact", LocationID: "loc-1"}
	for i := 0; i < 2; i++ {
		p, _, err := e.PartialView(context.Background(), f, in)
		if err != nil || shape(p) != "conditional conditional never" {
			t.Fatalf("round %d: %v %v", i, p, err)
		}
	}
	f.users["u"] = []byte(`{"id":"u","role":"admin","location_ids":["loc-1"],"assigned_data_only":true}`)
	p, _, err := e.PartialView(context.Background(), f, in)
	if err != nil || shape(p) != "always" {
		t.Fatalf("after the change: %v %v, want always", p, err)
	}
	delete(f.users, "u")
	p, _, err = e.PartialView(context.Background(), f, in)
	if err != nil || shape(p) != "never" {
		t.Fatalf("after the delete: %v %v, want never", p, err)
	}
}

// Memo computes a value once per key, keeps no error, and stops keeping
// values beyond maxMemo keys (it still computes them).
func TestPartialMemo(t *testing.T) {
	var p Partial
	calls := 0
	f := func(v string) func() (any, error) {
		return func() (any, error) { calls++; return v, nil }
	}
	for i := 0; i < 2; i++ {
		if v, err := p.Memo("a", f("A")); err != nil || v != "A" {
			t.Fatalf("%v %v", v, err)
		}
	}
	if calls != 1 {
		t.Fatalf("%d calls, want 1", calls)
	}
	boom := errors.New("boom")
	for i := 0; i < 2; i++ {
		if _, err := p.Memo("e", func() (any, error) { calls++; return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("err %v", err)
		}
	}
	if calls != 3 {
		t.Fatalf("%d calls, want 3: an error is not kept", calls)
	}
	for i := 0; i < 2*maxMemo; i++ {
		if v, _ := p.Memo(strconv.Itoa(i), f(strconv.Itoa(i))); v != strconv.Itoa(i) {
			t.Fatalf("key %d: %v", i, v)
		}
	}
	if len(p.memo) != maxMemo {
		t.Fatalf("%d values kept, want %d", len(p.memo), maxMemo)
	}
	if v, _ := p.Memo("a", f("other")); v != "A" {
		t.Fatalf("a: %v", v)
	}
}

// TestPartialViewConcurrent: partial evaluations of one revision at once,
// each for its own subject (no cache), give the answers they give alone;
// under -race they raced inside OPA's copy propagation before evalMu.
func TestPartialViewConcurrent(t *testing.T) {
	e, err := New(Config{EvalTimeout: testEvalTimeout, FS: policies.FS, DecisionCacheSlots: -1})
	if err != nil {
		t.Fatal(err)
	}
	facts := httpFacts()
	subjects := []string{"u-owner", "u-fol", "u-far"}
	want := map[string]string{}
	for _, s := range subjects {
		p, _, err := e.PartialView(context.Background(), facts, FilterInput{Subject: s, Type: "contact", LocationID: "loc-1"})
		if err != nil {
			t.Fatal(err)
		}
		want[s] = fmt.Sprint(p.Branches)
	}
	var wg sync.WaitGroup
	for i := range 12 {
		s := subjects[i%len(subjects)]
		wg.Go(func() {
			p, _, err := e.PartialView(context.Background(), facts, FilterInput{Subject: s, Type: "contact", LocationID: "loc-1"})
			if err != nil {
				t.Error(err)
				return
			}
			if got := fmt.Sprint(p.Branches); got != want[s] {
				t.Errorf("%s: %s, want %s", s, got, want[s])
			}
		})
	}
	wg.Wait()
}
