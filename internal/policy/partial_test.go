package policy

import (
	"context"
	"errors"
	"testing"
)

func TestPartialView(t *testing.T) {
	e := newDefaultEngine(t)
	f := &memFacts{users: map[string][]byte{
		"admin":  []byte(`{"id":"admin","role":"admin","location_ids":["loc-1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`),
		"free":   []byte(`{"id":"free","role":"user","location_ids":["loc-1"],"assigned_data_only":false,"contacts_enabled":true,"opportunities_enabled":true}`),
		"rst":    []byte(`{"id":"rst","role":"user","location_ids":["loc-1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`),
		"nocont": []byte(`{"id":"nocont","role":"admin","location_ids":["loc-1"],"assigned_data_only":false,"contacts_enabled":false,"opportunities_enabled":true}`),
	}}
	const always, never, cond = "always", "never", "conditional"
	tests := []struct {
		subject, typ, loc string
		want              string
	}{
		{"admin", "contact", "loc-1", always},
		{"admin", "contact", "loc-2", never},
		{"free", "opportunity", "loc-1", always},
		{"rst", "contact", "loc-1", cond},
		{"rst", "contact", "loc-2", never},
		{"nocont", "contact", "loc-1", never},
		{"nocont", "opportunity", "loc-1", always},
		{"ghost", "contact", "loc-1", never},
		{"admin", "invoice", "loc-1", never},
	}
	for _, tt := range tests {
		t.Run(tt.subject+"/"+tt.typ+"/"+tt.loc, func(t *testing.T) {
			p, rev, err := e.PartialView(context.Background(), f, FilterInput{Subject: tt.subject, Type: tt.typ, LocationID: tt.loc})
			if err != nil {
				t.Fatal(err)
			}
			if rev != e.Revision() || len(p.Support) != 0 || len(p.Unknowns) != 1 || p.Unknowns[0].String() != "input.record" {
				t.Fatalf("revision %s, support %v, unknowns %v", rev, p.Support, p.Unknowns)
			}
			got := cond
			switch {
			case len(p.Queries) == 0:
				got = never
			case len(p.Queries[0]) == 0:
				got = always
			}
			if got != tt.want {
				t.Errorf("queries %v: %s, want %s", p.Queries, got, tt.want)
			}
			if got == cond && len(p.Queries) != 2 {
				t.Errorf("queries %v, want owner or follower", p.Queries)
			}
		})
	}
}

func TestPartialViewErrors(t *testing.T) {
	t.Run("no entry point", func(t *testing.T) {
		dir := t.TempDir()
		files := defaultPolicyFiles(t, false)
		writeFiles(t, dir, files)
		e, err := New(Config{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.PartialView(context.Background(), &memFacts{}, FilterInput{Subject: "u", Type: "contact", LocationID: "l"}); !errors.Is(err, ErrNoViewFilter) {
			t.Errorf("err %v, want ErrNoViewFilter", err)
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
		if err != nil || len(p.Queries) != 2 {
			t.Fatalf("round %d: %v %v", i, p, err)
		}
	}
	f.users["u"] = []byte(`{"id":"u","role":"admin","location_ids":["loc-1"],"assigned_data_only":true}`)
	p, _, err := e.PartialView(context.Background(), f, in)
	if err != nil || len(p.Queries) != 1 || len(p.Queries[0]) != 0 {
		t.Fatalf("after the change: %v %v, want always", p, err)
	}
	delete(f.users, "u")
	p, _, err = e.PartialView(context.Background(), f, in)
	if err != nil || len(p.Queries) != 0 {
		t.Fatalf("after the delete: %v %v, want never", p, err)
	}
}
