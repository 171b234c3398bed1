package index

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPutUserStoresEveryField(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(User{ID: "u-1", Role: "user"}); err != nil { // nil location_ids
			return err
		}
		return w.PutUser(User{ID: "u-2", Role: "admin", LocationIDs: []string{"l-1", "l-2"}, AssignedDataOnly: true,
			ContactsEnabled: true})
	})
	for _, tc := range []struct{ id, want string }{
		{"u-1", `{"id":"u-1","role":"user","location_ids":[],"assigned_data_only":false,"contacts_enabled":false,"opportunities_enabled":false}`},
		{"u-2", `{"id":"u-2","role":"admin","location_ids":["l-1","l-2"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":false}`},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if got := string(storedJSON(t, ix, "", tc.id)); got != tc.want {
				t.Errorf("stored %s\nwant    %s", got, tc.want)
			}
		})
	}
	// Replace.
	mustUpdate(t, ix, func(w *WriteTx) error { return w.PutUser(user("u-1", "l-9")) })
	mustView(t, ix, func(rt *ReadTx) error {
		u, ok, err := rt.User("u-1")
		if err != nil || !ok || !equalUser(u, user("u-1", "l-9")) {
			t.Errorf("User(u-1) = %+v, %v, %v", u, ok, err)
		}
		if _, ok, err := rt.User("nobody"); ok || err != nil {
			t.Errorf("User(nobody) = %v, %v", ok, err)
		}
		if v, err := rt.UserJSON("nobody"); v != nil || err != nil {
			t.Errorf("UserJSON(nobody) = %q, %v", v, err)
		}
		return nil
	})
	if c := ix.Counts(); c.Users != 2 {
		t.Errorf("Counts().Users = %d, want 2", c.Users)
	}
}

func TestRecordJSONShape(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutRecord(Record{Type: TypeContact, ID: "c-1", LocationID: "l-1"}); err != nil { // nil followers
			return err
		}
		return w.PutRecord(Record{Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "u-1",
			Followers: []string{"u-2"}, ContactID: "c-1"})
	})
	for _, tc := range []struct{ typ, id, want string }{
		{TypeContact, "c-1", `{"type":"contact","id":"c-1","location_id":"l-1","owner":"","followers":[]}`},
		{TypeOpportunity, "o-1", `{"type":"opportunity","id":"o-1","location_id":"l-1","owner":"u-1","followers":["u-2"],"contact_id":"c-1"}`},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if got := string(storedJSON(t, ix, tc.typ, tc.id)); got != tc.want {
				t.Errorf("stored %s\nwant    %s", got, tc.want)
			}
			r, ok := getRecord(t, ix, tc.typ, tc.id)
			if !ok || r.Followers == nil {
				t.Errorf("Record = %+v, %v: want found, non-nil followers", r, ok)
			}
		})
	}
	if r, ok := getRecord(t, ix, TypeContact, "o-1"); ok {
		t.Errorf("Record(contact, o-1) found %+v: types are separate", r)
	}
}

func TestInvalidIDs(t *testing.T) {
	long := strings.Repeat("x", MaxIDLen+1)
	okLong := strings.Repeat("x", MaxIDLen)
	for _, tc := range []struct {
		name string
		op   func(*WriteTx) error
	}{
		{"user id empty", func(w *WriteTx) error { return w.PutUser(user("")) }},
		{"user id too long", func(w *WriteTx) error { return w.PutUser(user(long)) }},
		{"user id NUL", func(w *WriteTx) error { return w.PutUser(user("u\x001")) }},
		{"user id not UTF-8", func(w *WriteTx) error { return w.PutUser(user("u-\xff")) }},
		{"follower not UTF-8", func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "\xc3") }},
		{"user location empty", func(w *WriteTx) error { return w.PutUser(user("u-1", "l-1", "")) }},
		{"user location NUL", func(w *WriteTx) error { return w.PutUser(user("u-1", "l\x00")) }},
		{"record type empty", func(w *WriteTx) error { return w.PutRecord(Record{ID: "c", LocationID: "l"}) }},
		{"record type NUL", func(w *WriteTx) error {
			return w.PutRecord(Record{Type: "contact\x00", ID: "c", LocationID: "l"})
		}},
		{"record id empty", func(w *WriteTx) error { return w.PutRecord(contact("", "l", "")) }},
		{"record id too long", func(w *WriteTx) error { return w.PutRecord(contact(long, "l", "")) }},
		{"record location empty", func(w *WriteTx) error { return w.PutRecord(contact("c", "", "")) }},
		{"record owner NUL", func(w *WriteTx) error { return w.PutRecord(contact("c", "l", "u\x00")) }},
		{"record follower empty", func(w *WriteTx) error { return w.PutRecord(contact("c", "l", "", "u-1", "")) }},
		{"record contact_id NUL", func(w *WriteTx) error {
			return w.PutRecord(Record{Type: TypeOpportunity, ID: "o", LocationID: "l", ContactID: "\x00"})
		}},
		{"delete user empty", func(w *WriteTx) error { return w.DeleteUser("") }},
		{"delete record NUL", func(w *WriteTx) error { return w.DeleteRecord(TypeContact, "c\x00") }},
		{"add follower empty user", func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "") }},
		{"remove follower long user", func(w *WriteTx) error { return w.RemoveFollower(TypeContact, "c-1", long) }},
		{"set owner NUL", func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "a\x00") }},
		{"set owner bad record id", func(w *WriteTx) error { return w.SetOwner(TypeContact, "", "u-1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := openTest(t, Config{})
			mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(contact("c-1", "l-1", "u-1")) })
			before := storedJSON(t, ix, TypeContact, "c-1")
			var opErr error
			mustUpdate(t, ix, func(w *WriteTx) error { opErr = tc.op(w); return nil }) // commit whatever was written
			if !errors.Is(opErr, ErrInvalidID) {
				t.Fatalf("error = %v, want ErrInvalidID", opErr)
			}
			if after := storedJSON(t, ix, TypeContact, "c-1"); string(after) != string(before) {
				t.Errorf("record changed: %s -> %s", before, after)
			}
			if c := ix.Counts(); c.Users != 0 || c.Records[TypeContact] != 1 || c.Records[TypeOpportunity] != 0 {
				t.Errorf("counts changed: %+v", c)
			}
			mustView(t, ix, func(rt *ReadTx) error { checkReverseIndex(t, rt); return nil })
		})
	}
	t.Run("512 bytes is fine", func(t *testing.T) {
		ix := openTest(t, Config{})
		mustUpdate(t, ix, func(w *WriteTx) error {
			if err := w.PutUser(user(okLong, okLong)); err != nil {
				return err
			}
			return w.PutRecord(Record{Type: okLong, ID: okLong, LocationID: okLong, Owner: okLong, ContactID: okLong})
		})
		mustView(t, ix, func(rt *ReadTx) error {
			ids, _, err := rt.SubjectRecords(okLong, okLong, okLong, "", 10)
			if err != nil || !slices.Equal(ids, []string{okLong}) {
				t.Errorf("SubjectRecords = %v, %v", ids, err)
			}
			return nil
		})
	})
	t.Run("lookups: absent", func(t *testing.T) {
		ix := openTest(t, Config{})
		mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(contact("a", "l", "")) })
		mustView(t, ix, func(rt *ReadTx) error {
			for _, id := range []string{"", long, "u\x00", "\xff"} {
				if v, err := rt.UserJSON(id); v != nil || err != nil {
					t.Errorf("UserJSON(%q) = %q, %v", id, v, err)
				}
				if _, ok, err := rt.User(id); ok || err != nil {
					t.Errorf("User(%q) = %v, %v", id, ok, err)
				}
				if v, err := rt.RecordJSON(TypeContact, id); v != nil || err != nil {
					t.Errorf("RecordJSON(contact, %q) = %q, %v", id, v, err)
				}
				if _, ok, err := rt.Record(id, "a"); ok || err != nil {
					t.Errorf("Record(%q, a) = %v, %v", id, ok, err)
				}
			}
			return nil
		})
	})
	t.Run("SubjectRecords", func(t *testing.T) {
		ix := openTest(t, Config{})
		mustView(t, ix, func(rt *ReadTx) error {
			for name, err := range map[string]error{
				"SubjectRecords":  func() error { _, _, err := rt.SubjectRecords("u", "contact", "", "", 1); return err }(),
				"SubjectRecords2": func() error { _, _, err := rt.SubjectRecords("u\x00", "contact", "l", "", 1); return err }(),
				"SubjectRecords3": func() error { _, _, err := rt.SubjectRecords("u", "contact", "l", "\x00", 1); return err }(),
			} {
				if !errors.Is(err, ErrInvalidID) {
					t.Errorf("%s: error %v, want ErrInvalidID", name, err)
				}
			}
			return nil
		})
	})
}

func TestPutRecordNormalisesFollowers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		owner     string
		followers []string
		want      []string
		err       error
	}{
		{"nil", "u-0", nil, []string{}, nil},
		{"kept in order", "u-0", []string{"u-3", "u-1", "u-2"}, []string{"u-3", "u-1", "u-2"}, nil},
		{"owner dropped", "u-0", []string{"u-1", "u-0", "u-2"}, []string{"u-1", "u-2"}, nil},
		{"duplicates dropped, first seen kept", "u-0", []string{"u-2", "u-1", "u-2", "u-1", "u-3"}, []string{"u-2", "u-1", "u-3"}, nil},
		{"unassigned keeps all", "", []string{"u-1", "u-2"}, []string{"u-1", "u-2"}, nil},
		{"10 distinct", "u-0", ids("f", 10), ids("f", 10), nil},
		{"10 distinct plus owner and duplicates", "u-0", append(append(ids("f", 10), "u-0"), ids("f", 10)...), ids("f", 10), nil},
		{"11 distinct", "u-0", ids("f", 11), nil, ErrTooManyFollowers},
		{"11 distinct unassigned", "", ids("f", 11), nil, ErrTooManyFollowers},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := openTest(t, Config{})
			var opErr error
			mustUpdate(t, ix, func(w *WriteTx) error {
				opErr = w.PutRecord(contact("c-1", "l-1", tc.owner, tc.followers...))
				return nil
			})
			if !errors.Is(opErr, tc.err) || (tc.err == nil) != (opErr == nil) {
				t.Fatalf("PutRecord error = %v, want %v", opErr, tc.err)
			}
			r, ok := getRecord(t, ix, TypeContact, "c-1")
			if tc.err != nil {
				if ok {
					t.Errorf("record written despite the error: %+v", r)
				}
				if c := ix.Counts(); c.Records[TypeContact] != 0 {
					t.Errorf("count = %d", c.Records[TypeContact])
				}
			} else if !ok || !slices.Equal(r.Followers, tc.want) {
				t.Errorf("followers = %q (found %v), want %q", r.Followers, ok, tc.want)
			}
			mustView(t, ix, func(rt *ReadTx) error { checkReverseIndex(t, rt); return nil })
		})
	}
	t.Run("MaxFollowers from config", func(t *testing.T) {
		ix := openTest(t, Config{MaxFollowers: 2})
		err := ix.Update(func(w *WriteTx) error { return w.PutRecord(contact("c-1", "l-1", "", "a", "b", "c")) })
		if !errors.Is(err, ErrTooManyFollowers) {
			t.Fatalf("error = %v, want ErrTooManyFollowers", err)
		}
		mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(contact("c-1", "l-1", "", "a", "b")) })
		err = ix.Update(func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "c") })
		if !errors.Is(err, ErrTooManyFollowers) {
			t.Fatalf("AddFollower error = %v, want ErrTooManyFollowers", err)
		}
	})
}

func TestPutRecordReplaceMovesReverseIndex(t *testing.T) {
	ix := openTest(t, Config{})
	steps := []Record{
		contact("c-1", "l-1", "u-1", "u-2", "u-3"),
		contact("c-1", "l-2", "u-1", "u-2", "u-3"),        // location changes
		contact("c-1", "l-2", "u-2", "u-1", "u-4"),        // owner and followers change
		contact("c-1", "l-2", "", "u-5"),                  // unassigned
		contact("c-1", "l-1", "u-5", "u-5", "u-6", "u-7"), // owner listed as follower
	}
	for i, r := range steps {
		mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(r) })
		mustView(t, ix, func(rt *ReadTx) error {
			checkReverseIndex(t, rt)
			for _, u := range ids("u-", 8) {
				for _, loc := range []string{"l-1", "l-2"} {
					got := allSubjectRecords(t, rt, u, TypeContact, loc, 10)
					var want []string
					if loc == r.LocationID && (u == r.Owner || slices.Contains(r.Followers, u)) {
						want = []string{"c-1"}
					}
					if len(got) != len(want) {
						t.Errorf("step %d: SubjectRecords(%s, %s) = %q, want %q", i, u, loc, got, want)
					}
				}
			}
			return nil
		})
		if c := ix.Counts(); c.Records[TypeContact] != 1 {
			t.Errorf("step %d: contact count %d", i, c.Records[TypeContact])
		}
	}
}

func TestFollowerAndOwnerOps(t *testing.T) {
	base := contact("c-1", "l-1", "u-0", "u-1", "u-2")
	full := contact("c-1", "l-1", "u-0", ids("f", 10)...)
	for _, tc := range []struct {
		name          string
		start         Record
		op            func(*WriteTx) error
		wantErr       error
		wantOwner     string
		wantFollowers []string
	}{
		{"add new", base, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "u-3") }, nil, "u-0", []string{"u-1", "u-2", "u-3"}},
		{"add present", base, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "u-1") }, nil, "u-0", []string{"u-1", "u-2"}},
		{"add owner", base, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "u-0") }, nil, "u-0", []string{"u-1", "u-2"}},
		{"add to missing record", base, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-9", "u-3") }, ErrRecordNotFound, "u-0", []string{"u-1", "u-2"}},
		{"add to other type", base, func(w *WriteTx) error { return w.AddFollower(TypeOpportunity, "c-1", "u-3") }, ErrRecordNotFound, "u-0", []string{"u-1", "u-2"}},
		{"add 11th", full, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "u-3") }, ErrTooManyFollowers, "u-0", ids("f", 10)},
		{"add 11th present is no-op", full, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "f3") }, nil, "u-0", ids("f", 10)},
		{"add 11th owner is no-op", full, func(w *WriteTx) error { return w.AddFollower(TypeContact, "c-1", "u-0") }, nil, "u-0", ids("f", 10)},
		{"remove present", base, func(w *WriteTx) error { return w.RemoveFollower(TypeContact, "c-1", "u-1") }, nil, "u-0", []string{"u-2"}},
		{"remove absent", base, func(w *WriteTx) error { return w.RemoveFollower(TypeContact, "c-1", "u-7") }, nil, "u-0", []string{"u-1", "u-2"}},
		{"remove owner is a no-op", base, func(w *WriteTx) error { return w.RemoveFollower(TypeContact, "c-1", "u-0") }, nil, "u-0", []string{"u-1", "u-2"}},
		{"remove from missing record", base, func(w *WriteTx) error { return w.RemoveFollower(TypeContact, "c-9", "u-1") }, ErrRecordNotFound, "u-0", []string{"u-1", "u-2"}},
		{"set owner to a follower", base, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "u-2") }, nil, "u-2", []string{"u-1"}},
		{"set owner to a stranger", base, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "u-5") }, nil, "u-5", []string{"u-1", "u-2"}},
		{"set owner to the owner", base, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "u-0") }, nil, "u-0", []string{"u-1", "u-2"}},
		{"unassign", base, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "") }, nil, "", []string{"u-1", "u-2"}},
		{"set owner of missing record", base, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-9", "u-1") }, ErrRecordNotFound, "u-0", []string{"u-1", "u-2"}},
		{"set owner on a full record", full, func(w *WriteTx) error { return w.SetOwner(TypeContact, "c-1", "f0") }, nil, "f0", ids("f", 10)[1:]},
		{"owner then follower", base, func(w *WriteTx) error {
			if err := w.SetOwner(TypeContact, "c-1", "u-1"); err != nil {
				return err
			}
			return w.AddFollower(TypeContact, "c-1", "u-0") // the old owner follows now
		}, nil, "u-1", []string{"u-2", "u-0"}},
		{"delete record", base, func(w *WriteTx) error { return w.DeleteRecord(TypeContact, "c-1") }, nil, "-", nil},
		{"delete missing record", base, func(w *WriteTx) error { return w.DeleteRecord(TypeContact, "c-9") }, nil, "u-0", []string{"u-1", "u-2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := openTest(t, Config{})
			mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(tc.start) })
			var opErr error
			mustUpdate(t, ix, func(w *WriteTx) error { opErr = tc.op(w); return nil }) // commit: a failed op must have written nothing
			if !errors.Is(opErr, tc.wantErr) || (tc.wantErr == nil) != (opErr == nil) {
				t.Fatalf("error = %v, want %v", opErr, tc.wantErr)
			}
			r, ok := getRecord(t, ix, TypeContact, "c-1")
			if tc.wantOwner == "-" {
				if ok {
					t.Errorf("record still there: %+v", r)
				}
				if c := ix.Counts(); c.Records[TypeContact] != 0 {
					t.Errorf("count %d after delete", c.Records[TypeContact])
				}
			} else if !ok || r.Owner != tc.wantOwner || !slices.Equal(r.Followers, tc.wantFollowers) {
				t.Errorf("record = %+v (found %v), want owner %q followers %q", r, ok, tc.wantOwner, tc.wantFollowers)
			}
			mustView(t, ix, func(rt *ReadTx) error { checkReverseIndex(t, rt); return nil })
		})
	}
}

func TestDeleteUserCleansReferences(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		for _, u := range []User{user("u-1", "l-1"), user("u-2", "l-1"), user("u-3", "l-2")} {
			if err := w.PutUser(u); err != nil {
				return err
			}
		}
		for _, r := range []Record{
			contact("c-1", "l-1", "u-1", "u-2", "u-3"),
			contact("c-2", "l-2", "u-2", "u-1"),
			{Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "u-3", Followers: []string{"u-1"}},
			contact("c-3", "l-1", "u-3", "u-9"), // u-9 is referenced but not stored
		} {
			if err := w.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	})
	for _, tc := range []struct {
		name  string
		del   string
		want  map[string]Record
		users uint64
	}{
		{"stored user", "u-1", map[string]Record{
			"c-1": contact("c-1", "l-1", "", "u-2", "u-3"),
			"c-2": contact("c-2", "l-2", "u-2"),
			"o-1": {Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "u-3", Followers: []string{}},
			"c-3": contact("c-3", "l-1", "u-3", "u-9"),
		}, 2},
		{"again: no-op", "u-1", nil, 2},
		{"never heard of: no-op", "u-42", nil, 2},
		{"referenced, not stored", "u-9", map[string]Record{
			"c-1": contact("c-1", "l-1", "", "u-2", "u-3"),
			"c-2": contact("c-2", "l-2", "u-2"),
			"o-1": {Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "u-3", Followers: []string{}},
			"c-3": contact("c-3", "l-1", "u-3"),
		}, 2},
		{"owner of several", "u-3", map[string]Record{
			"c-1": contact("c-1", "l-1", "", "u-2"),
			"c-2": contact("c-2", "l-2", "u-2"),
			"o-1": {Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "", Followers: []string{}},
			"c-3": contact("c-3", "l-1", ""),
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before *state
			mustView(t, ix, func(rt *ReadTx) error { before = readState(t, rt); return nil })
			mustUpdate(t, ix, func(w *WriteTx) error { return w.DeleteUser(tc.del) })
			mustView(t, ix, func(rt *ReadTx) error {
				checkReverseIndex(t, rt)
				after := readState(t, rt)
				if _, ok := after.Users[tc.del]; ok {
					t.Errorf("user %s still stored", tc.del)
				}
				if tc.want == nil {
					compareState(t, after, before)
					return nil
				}
				for _, w := range tc.want {
					if g := after.Records[string(recordKey(nil, w.Type, w.ID))]; !equalRecord(g, w) {
						t.Errorf("%s = %+v, want %+v", w.ID, g, w)
					}
				}
				ids, _, err := rt.SubjectRecords(tc.del, TypeContact, "l-1", "", 100)
				if err != nil || len(ids) != 0 {
					t.Errorf("SubjectRecords of the deleted user = %q, %v", ids, err)
				}
				return nil
			})
			if c := ix.Counts(); c.Users != tc.users || c.Records[TypeContact] != 3 || c.Records[TypeOpportunity] != 1 {
				t.Errorf("counts = %+v", c)
			}
		})
	}
}

func TestWriteTxReadsOwnWrites(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-1")); err != nil {
			return err
		}
		if err := w.PutRecord(contact("c-1", "l-1", "u-1")); err != nil {
			return err
		}
		if err := w.SetAppliedSeq(5); err != nil {
			return err
		}
		if _, ok, err := w.User("u-1"); !ok || err != nil {
			t.Errorf("User in the same tx: %v, %v", ok, err)
		}
		if r, ok, err := w.Record(TypeContact, "c-1"); !ok || err != nil || r.Owner != "u-1" {
			t.Errorf("Record in the same tx: %+v %v, %v", r, ok, err)
		}
		if c := w.Counts(); c.Users != 1 || c.Records[TypeContact] != 1 {
			t.Errorf("Counts in the same tx: %+v", c)
		}
		if s := w.AppliedSeq(); s != 5 {
			t.Errorf("AppliedSeq in the same tx: %d", s)
		}
		ids, _, err := w.SubjectRecords("u-1", TypeContact, "l-1", "", 5)
		if err != nil || !slices.Equal(ids, []string{"c-1"}) {
			t.Errorf("SubjectRecords in the same tx: %q, %v", ids, err)
		}
		if err := w.DeleteRecord(TypeContact, "c-1"); err != nil {
			return err
		}
		if c := w.Counts(); c.Records[TypeContact] != 0 {
			t.Errorf("Counts after delete in the same tx: %+v", c)
		}
		return nil
	})
	if c := ix.Counts(); c.Users != 1 || c.Records[TypeContact] != 0 || ix.AppliedSeq() != 5 {
		t.Errorf("after commit: counts %+v seq %d", c, ix.AppliedSeq())
	}
}

func TestCountsOtherTypes(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		return w.PutRecord(Record{Type: "task", ID: "t-1", LocationID: "l"})
	})
	if c := ix.Counts(); c.Records["task"] != 1 || len(c.Records) != 3 {
		t.Errorf("Counts = %+v", c)
	}
	mustUpdate(t, ix, func(w *WriteTx) error { return w.DeleteRecord("task", "t-1") })
	c := ix.Counts()
	if _, ok := c.Records["task"]; ok || len(c.Records) != 2 {
		t.Errorf("Counts after deleting the last task = %+v", c)
	}
	c.Records[TypeContact] = 99 // the caller's copy
	if ix.Counts().Records[TypeContact] != 0 {
		t.Error("Counts() returns the cached map itself")
	}
}

func TestUpdateRollback(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-1", "l-1")); err != nil {
			return err
		}
		if err := w.PutRecord(contact("c-1", "l-1", "u-1", "u-2")); err != nil {
			return err
		}
		return w.SetAppliedSeq(3)
	})
	var before *state
	mustView(t, ix, func(rt *ReadTx) error { before = readState(t, rt); return nil })
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		fn   func(*WriteTx) error
	}{
		{"error after writes", func(w *WriteTx) error {
			_ = w.PutUser(user("u-2"))
			_ = w.PutRecord(contact("c-2", "l-1", "u-2"))
			_ = w.DeleteUser("u-1")
			_ = w.AddFollower(TypeContact, "c-1", "u-3")
			_ = w.SetAppliedSeq(9)
			return boom
		}},
		{"11th follower", func(w *WriteTx) error {
			_ = w.SetAppliedSeq(4)
			for _, f := range ids("f", 10) {
				if err := w.AddFollower(TypeContact, "c-1", f); err != nil {
					return err
				}
			}
			return nil
		}},
		{"panic", func(w *WriteTx) error {
			_ = w.DeleteRecord(TypeContact, "c-1")
			panic(boom)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := func() (err error) {
				defer func() {
					if p := recover(); p != nil {
						err = p.(error)
					}
				}()
				return ix.Update(tc.fn)
			}()
			if err == nil {
				t.Fatal("Update succeeded")
			}
			mustView(t, ix, func(rt *ReadTx) error {
				compareState(t, readState(t, rt), before)
				checkReverseIndex(t, rt)
				return nil
			})
			if ix.AppliedSeq() != 3 || !equalCounts(ix.Counts(), before.counts()) {
				t.Errorf("cached seq %d counts %+v changed", ix.AppliedSeq(), ix.Counts())
			}
		})
	}
	t.Run("fn error returned as is", func(t *testing.T) {
		if err := ix.Update(func(*WriteTx) error { return boom }); err != boom {
			t.Errorf("Update error = %v, want boom itself", err)
		}
	})
}
