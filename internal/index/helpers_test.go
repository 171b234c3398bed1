package index

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// openTest opens an index in a fresh temporary directory, closed at the end of the test.
func openTest(tb testing.TB, cfg Config) *Index {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = tb.TempDir()
	}
	ix, err := Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = ix.Close() })
	return ix
}

func mustUpdate(tb testing.TB, ix *Index, fn func(*WriteTx) error) {
	tb.Helper()
	if err := ix.Update(fn); err != nil {
		tb.Fatalf("Update: %v", err)
	}
}

func mustView(tb testing.TB, ix *Index, fn func(*ReadTx) error) {
	tb.Helper()
	if err := ix.View(fn); err != nil {
		tb.Fatalf("View: %v", err)
	}
}

func getRecord(tb testing.TB, ix *Index, typ, id string) (Record, bool) {
	tb.Helper()
	var (
		r  Record
		ok bool
	)
	mustView(tb, ix, func(t *ReadTx) error {
		var err error
		r, ok, err = t.Record(typ, id)
		return err
	})
	return r, ok
}

func user(id string, locs ...string) User {
	if locs == nil {
		locs = []string{}
	}
	return User{ID: id, Role: "user", LocationIDs: locs, ContactsEnabled: true, OpportunitiesEnabled: true}
}

func contact(id, loc, owner string, followers ...string) Record {
	if followers == nil {
		followers = []string{}
	}
	return Record{Type: TypeContact, ID: id, LocationID: loc, Owner: owner, Followers: followers}
}

// state is everything the index holds, as plain maps with the index's types: what the tests
// expect (the reference model's state, or a table) and what the index is compared against.
type state struct {
	Seq     uint64
	Users   map[string]User
	Records map[string]Record // by recordKey
}

func newState() *state {
	return &state{Users: map[string]User{}, Records: map[string]Record{}}
}

func (s *state) counts() Counts {
	c := newCounts()
	c.Users = uint64(len(s.Users))
	for _, r := range s.Records {
		c.Records[r.Type]++
	}
	return c
}

// readState reads the whole index in one transaction.
func readState(tb testing.TB, t *ReadTx) *state {
	tb.Helper()
	s := newState()
	s.Seq = t.AppliedSeq()
	if err := t.ForEachUser(func(u User) error {
		s.Users[u.ID] = u
		return nil
	}); err != nil {
		tb.Fatalf("ForEachUser: %v", err)
	}
	if err := t.ForEachRecord(func(r Record) error {
		s.Records[string(recordKey(nil, r.Type, r.ID))] = r
		return nil
	}); err != nil {
		tb.Fatalf("ForEachRecord: %v", err)
	}
	return s
}

// checkReverseIndex verifies that the byuser bucket holds exactly the entries the records imply,
// and that the stored counts match the buckets.
func checkReverseIndex(tb testing.TB, t *ReadTx) {
	tb.Helper()
	want := map[string]byte{}
	n := newCounts()
	if err := t.ForEachRecord(func(r Record) error {
		n.Records[r.Type]++
		if r.Followers == nil {
			tb.Errorf("record %s/%s: nil followers", r.Type, r.ID)
		}
		if r.Owner != "" {
			want[string(byUserKey(nil, r.Owner, r.Type, r.LocationID, r.ID))] = roleOwner
		}
		for _, f := range r.Followers {
			if f == r.Owner {
				tb.Errorf("record %s/%s: owner %q is also a follower", r.Type, r.ID, f)
			}
			k := string(byUserKey(nil, f, r.Type, r.LocationID, r.ID))
			if _, dup := want[k]; dup {
				tb.Errorf("record %s/%s: follower %q twice", r.Type, r.ID, f)
			}
			want[k] = roleFollower
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	got := map[string]byte{}
	if err := t.scan(bByUser, nil, nil, func(k, v []byte) (bool, error) {
		if len(v) != 1 {
			tb.Errorf("byuser %q: value %q", k, v)
			return true, nil
		}
		got[string(k)] = v[0]
		return true, nil
	}); err != nil {
		tb.Fatal(err)
	}
	if !maps.Equal(got, want) {
		for k, v := range want {
			if got[k] != v {
				tb.Errorf("byuser %q: got %q, want %q", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				tb.Errorf("byuser %q = %q: stale entry", k, v)
			}
		}
	}
	if err := t.scan(bUsers, nil, nil, func(_, _ []byte) (bool, error) {
		n.Users++
		return true, nil
	}); err != nil {
		tb.Fatal(err)
	}
	if c := t.Counts(); !equalCounts(c, n) {
		tb.Errorf("stored counts %+v, buckets hold %+v", c, n)
	}
}

func equalCounts(a, b Counts) bool {
	return a.Users == b.Users && maps.Equal(a.Records, b.Records)
}

// compareState fails the test where got and want differ.
func compareState(tb testing.TB, got, want *state) {
	tb.Helper()
	if got.Seq != want.Seq {
		tb.Errorf("applied_seq = %d, want %d", got.Seq, want.Seq)
	}
	for id, w := range want.Users {
		if g, ok := got.Users[id]; !ok {
			tb.Errorf("user %q missing", id)
		} else if !equalUser(g, w) {
			tb.Errorf("user %q = %+v, want %+v", id, g, w)
		}
	}
	for id := range got.Users {
		if _, ok := want.Users[id]; !ok {
			tb.Errorf("unexpected user %q", id)
		}
	}
	for k, w := range want.Records {
		if g, ok := got.Records[k]; !ok {
			tb.Errorf("record %q missing", k)
		} else if !equalRecord(g, w) {
			tb.Errorf("record %q = %+v, want %+v", k, g, w)
		}
	}
	for k := range got.Records {
		if _, ok := want.Records[k]; !ok {
			tb.Errorf("unexpected record %q", k)
		}
	}
}

func equalUser(a, b User) bool {
	return a.ID == b.ID && a.Role == b.Role && slices.Equal(a.LocationIDs, b.LocationIDs) &&
		a.AssignedDataOnly == b.AssignedDataOnly && a.ContactsEnabled == b.ContactsEnabled &&
		a.OpportunitiesEnabled == b.OpportunitiesEnabled
}

func equalRecord(a, b Record) bool {
	return a.Type == b.Type && a.ID == b.ID && a.LocationID == b.LocationID && a.Owner == b.Owner &&
		slices.Equal(a.Followers, b.Followers) && a.ContactID == b.ContactID
}

// allSubjectRecords pages through SubjectRecords with page size limit.
func allSubjectRecords(tb testing.TB, t *ReadTx, userID, typ, loc string, limit int) []string {
	tb.Helper()
	all := []string{}
	after := ""
	for i := 0; ; i++ {
		ids, next, err := t.SubjectRecords(userID, typ, loc, after, limit)
		if err != nil {
			tb.Fatalf("SubjectRecords(%q, %q, %q, %q, %d): %v", userID, typ, loc, after, limit, err)
		}
		if len(ids) > limit {
			tb.Fatalf("SubjectRecords returned %d ids, limit %d", len(ids), limit)
		}
		all = append(all, ids...)
		if next == "" {
			return all
		}
		if next != ids[len(ids)-1] {
			tb.Fatalf("next %q is not the last id returned %q", next, ids[len(ids)-1])
		}
		if i > 10000 {
			tb.Fatal("SubjectRecords paging does not end")
		}
		after = next
	}
}

// dumpJSON returns the stored bytes of a user or a record, copied.
func storedJSON(tb testing.TB, ix *Index, typ, id string) []byte {
	tb.Helper()
	var out []byte
	mustView(tb, ix, func(t *ReadTx) error {
		var (
			v   []byte
			err error
		)
		if typ == "" {
			v, err = t.UserJSON(id)
		} else {
			v, err = t.RecordJSON(typ, id)
		}
		out = bytes.Clone(v)
		return err
	})
	return out
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}
