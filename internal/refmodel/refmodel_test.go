package refmodel

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func str(s string) *string { return &s }

func user(id string, locs ...string) User {
	return User{ID: id, Role: "user", LocationIDs: append([]string{}, locs...), ContactsEnabled: true, OpportunitiesEnabled: true}
}

func contact(id, owner string, followers ...string) Record {
	return Record{Type: TypeContact, ID: id, LocationID: "loc-1", Owner: owner, Followers: append([]string{}, followers...)}
}

// modelOf makes a model holding users and records as given, without Apply.
func modelOf(tb testing.TB, users []User, records ...Record) *Model {
	tb.Helper()
	m := New()
	for _, u := range users {
		m.Users[u.ID] = u
	}
	for _, r := range records {
		m.Records[Key{r.Type, r.ID}] = r
	}
	return m
}

// TestApply checks each statement of docs/reference.md §2.3 replication semantics on the model, and that an
// invalid event is an error that changes nothing.
func TestApply(t *testing.T) {
	u1, u2 := user("u-1", "loc-1"), user("u-2", "loc-1")
	base := func(tb testing.TB) *Model {
		return modelOf(tb, []User{u1, u2}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1"))
	}
	admin := User{ID: "u-1", Role: "admin", LocationIDs: []string{"loc-2"}}
	opp := Record{Type: TypeOpportunity, ID: "o-1", LocationID: "loc-1", Followers: []string{}, ContactID: "c-1"}
	cases := []struct {
		name  string
		event Event
		want  *Model // nil: the event is invalid, with err
		err   error
	}{
		{"user.upsert adds", Event{Op: OpUserUpsert, User: &User{ID: "u-9", Role: "user", LocationIDs: []string{}}},
			modelOf(t, []User{u1, u2, {ID: "u-9", Role: "user", LocationIDs: []string{}}}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1")), nil},
		{"user.upsert replaces", Event{Op: OpUserUpsert, User: &admin},
			modelOf(t, []User{admin, u2}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1")), nil},
		{"user.delete unassigns and unfollows", Event{Op: OpUserDelete, UserID: str("u-1")},
			modelOf(t, []User{u2}, contact("c-1", "", "u-2", "u-3"), contact("c-2", "u-2")), nil},
		{"user.delete of a user only named", Event{Op: OpUserDelete, UserID: str("u-3")},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-1", "u-2"), contact("c-2", "u-2", "u-1")), nil},
		{"user.delete of an absent id", Event{Op: OpUserDelete, UserID: str("u-9")}, base(t), nil},
		{"record.upsert drops the owner and duplicates", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-3", LocationID: "loc-1", Owner: "u-1", Followers: []string{"u-2", "u-1", "u-4", "u-2"}}},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1"), contact("c-3", "u-1", "u-2", "u-4")), nil},
		{"record.upsert replaces", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-1", LocationID: "loc-1"}},
			modelOf(t, []User{u1, u2}, contact("c-1", ""), contact("c-2", "u-2", "u-1")), nil},
		{"record.upsert of an opportunity with its contact", Event{Op: OpRecordUpsert, Record: &opp},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1"), opp), nil},
		{"record.upsert with 10 followers besides the owner", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-1", LocationID: "loc-1", Owner: "u-0",
			Followers: []string{"u-0", "u-1", "u-2", "u-3", "u-4", "u-5", "u-6", "u-7", "u-8", "u-9", "u-10", "u-1"}}},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-0", "u-1", "u-2", "u-3", "u-4", "u-5", "u-6", "u-7", "u-8", "u-9", "u-10"), contact("c-2", "u-2", "u-1")), nil},
		{"record.delete", Event{Op: OpRecordDelete, Type: TypeContact, ID: "c-1"}, modelOf(t, []User{u1, u2}, contact("c-2", "u-2", "u-1")), nil},
		{"record.delete of an absent id", Event{Op: OpRecordDelete, Type: TypeOpportunity, ID: "c-1"}, base(t), nil},
		{"follower.add appends", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-2", UserID: str("u-5")},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-1", "u-2", "u-3"), contact("c-2", "u-2", "u-1", "u-5")), nil},
		{"follower.add of a follower", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str("u-3")}, base(t), nil},
		{"follower.add of the owner", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str("u-1")}, base(t), nil},
		{"follower.remove", Event{Op: OpFollowerRemove, Type: TypeContact, ID: "c-1", UserID: str("u-2")},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-1", "u-3"), contact("c-2", "u-2", "u-1")), nil},
		{"follower.remove of an absent follower", Event{Op: OpFollowerRemove, Type: TypeContact, ID: "c-1", UserID: str("u-9")}, base(t), nil},
		{"owner.set makes a follower the owner", Event{Op: OpOwnerSet, Type: TypeContact, ID: "c-1", UserID: str("u-3")},
			modelOf(t, []User{u1, u2}, contact("c-1", "u-3", "u-2"), contact("c-2", "u-2", "u-1")), nil},
		{"owner.set to nobody unassigns", Event{Op: OpOwnerSet, Type: TypeContact, ID: "c-1", UserID: str("")},
			modelOf(t, []User{u1, u2}, contact("c-1", "", "u-2", "u-3"), contact("c-2", "u-2", "u-1")), nil},

		{"unknown op", Event{Op: "user.rename", UserID: str("u-1")}, nil, ErrInvalid},
		{"user.upsert without a user", Event{Op: OpUserUpsert}, nil, ErrInvalid},
		{"user.upsert with a bad role", Event{Op: OpUserUpsert, User: &User{ID: "u-1", Role: "owner", LocationIDs: []string{}}}, nil, ErrInvalid},
		{"user.upsert without location_ids", Event{Op: OpUserUpsert, User: &User{ID: "u-1", Role: "user"}}, nil, ErrInvalid},
		{"user.delete without a user_id", Event{Op: OpUserDelete}, nil, ErrInvalid},
		{"record.upsert of a bad type", Event{Op: OpRecordUpsert, Record: &Record{Type: "lead", ID: "l-1", LocationID: "loc-1"}}, nil, ErrInvalid},
		{"record.upsert without a location", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-1"}}, nil, ErrInvalid},
		{"record.upsert of a contact with a contact_id", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-1", LocationID: "loc-1", ContactID: "c-2"}}, nil, ErrInvalid},
		{"record.upsert with an 11th follower", Event{Op: OpRecordUpsert, Record: &Record{Type: TypeContact, ID: "c-9", LocationID: "loc-1",
			Followers: []string{"u-0", "u-1", "u-2", "u-3", "u-4", "u-5", "u-6", "u-7", "u-8", "u-9", "u-10"}}}, nil, ErrTooManyFollowers},
		{"record.delete of a bad type", Event{Op: OpRecordDelete, Type: "lead", ID: "c-1"}, nil, ErrInvalid},
		{"follower.add on an absent record", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-9", UserID: str("u-1")}, nil, ErrRecordNotFound},
		{"follower.add without a user_id", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1"}, nil, ErrInvalid},
		{"follower.add of nobody", Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str("")}, nil, ErrInvalid},
		{"follower.remove on an absent record", Event{Op: OpFollowerRemove, Type: TypeOpportunity, ID: "c-1", UserID: str("u-2")}, nil, ErrRecordNotFound},
		{"owner.set on an absent record", Event{Op: OpOwnerSet, Type: TypeContact, ID: "c-9", UserID: str("u-1")}, nil, ErrRecordNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base(t)
			before := m.Snapshot(0)
			err := m.Apply(tc.event)
			if tc.want == nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Apply = %v, want %v", err, tc.err)
				}
				if after := m.Snapshot(0); after != before {
					t.Fatalf("an invalid event changed the model:\n%s\nwas\n%s", after, before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			// Snapshot keeps the followers' order, which the index keeps too.
			if got, want := m.Snapshot(0), tc.want.Snapshot(0); got != want {
				t.Fatalf("after Apply:\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestFollowerLimit(t *testing.T) {
	for _, maxFollowers := range []int{0, 1, 3} {
		t.Run(fmt.Sprint("MaxFollowers ", maxFollowers), func(t *testing.T) {
			m := modelOf(t, nil, contact("c-1", "u-o"))
			m.MaxFollowers = maxFollowers
			limit := maxFollowers
			if maxFollowers == 0 {
				limit = DefaultMaxFollowers
			}
			for i := range limit {
				if err := m.Apply(Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str(fmt.Sprint("u-", i))}); err != nil {
					t.Fatalf("follower %d: %v", i+1, err)
				}
			}
			for _, u := range []string{"u-0", "u-o"} { // present ones change nothing, even at the limit
				if err := m.Apply(Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str(u)}); err != nil {
					t.Fatalf("follower.add of %s at the limit: %v", u, err)
				}
			}
			err := m.Apply(Event{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str("u-new")})
			if !errors.Is(err, ErrTooManyFollowers) || len(m.Records[Key{TypeContact, "c-1"}].Followers) != limit {
				t.Fatalf("follower %d: %v, followers %q", limit+1, err, m.Records[Key{TypeContact, "c-1"}].Followers)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	m := modelOf(t, []User{user("u-1", "loc-1")}, contact("c-1", "u-1", "u-2"))
	want := m.Snapshot(1)
	c := m.Clone()
	c.Users["u-1"].LocationIDs[0] = "changed"
	for _, e := range []Event{
		{Op: OpFollowerAdd, Type: TypeContact, ID: "c-1", UserID: str("u-3")},
		{Op: OpOwnerSet, Type: TypeContact, ID: "c-1", UserID: str("u-2")},
		{Op: OpUserDelete, UserID: str("u-1")},
	} {
		if err := c.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Snapshot(1); got != want {
		t.Fatalf("the original changed with its clone:\n%s\nwant\n%s", got, want)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	m := New()
	for _, e := range Events(t, GenConfig{Seed: 1, Locations: []string{"loc-1", "loc-2"}}, 2000) {
		if err := m.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	snap := m.Snapshot(2000)
	if !strings.HasPrefix(snap, "{\"seq\": 2000}\n{\"user\":{\"id\":") {
		t.Fatalf("snapshot begins %q", snap[:min(len(snap), 40)])
	}
	seq, back, err := ReadSnapshot(strings.NewReader(snap))
	if err != nil || seq != 2000 {
		t.Fatalf("ReadSnapshot = %d, %v", seq, err)
	}
	if back.Snapshot(2000) != snap || back.Canonical() != m.Canonical() {
		t.Fatal("the snapshot read back differs")
	}
	// Canonical ignores the followers' order, and nothing else.
	k := m.Keys()[0]
	for _, r := range m.Records {
		if len(r.Followers) > 1 {
			k = Key{r.Type, r.ID}
			break
		}
	}
	r := back.Records[k]
	r.Followers = slices.Clone(r.Followers)
	slices.Reverse(r.Followers)
	back.Records[k] = r
	if len(r.Followers) < 2 || back.Canonical() != m.Canonical() {
		t.Fatalf("Canonical depends on the order of %s's followers %q", k, r.Followers)
	}
	r.LocationID = "loc-9"
	back.Records[k] = r
	if back.Canonical() == m.Canonical() {
		t.Fatal("Canonical misses a record's location")
	}
}

func TestReadSnapshotErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", "", "no header"},
		{"no header", `{"user":{"id":"u-1"}}` + "\n", "line 1"},
		{"unknown field", "{\"seq\": 1}\n{\"user\":{\"id\":\"u-1\",\"age\":3}}\n", "line 2"},
		{"neither", "{\"seq\": 1}\n{}\n", "line 2: neither"},
		{"both", "{\"seq\": 1}\n{\"user\":{\"id\":\"u-1\"},\"record\":{\"type\":\"contact\",\"id\":\"c-1\"}}\n", "line 2: neither"},
		{"a user twice", "{\"seq\": 1}\n{\"user\":{\"id\":\"u-1\"}}\n{\"user\":{\"id\":\"u-1\"}}\n", "line 3: user \"u-1\" again"},
		{"a record twice", "{\"seq\": 1}\n{\"record\":{\"type\":\"contact\",\"id\":\"c-1\"}}\n{\"record\":{\"type\":\"contact\",\"id\":\"c-1\"}}\n", "line 3: record contact/c-1 again"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadSnapshot(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadSnapshot = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestSubjectRecords(t *testing.T) {
	m := modelOf(t, nil,
		contact("c-2", "u-1"), contact("c-10", "u-2", "u-1"), contact("c-3", "u-2"),
		Record{Type: TypeContact, ID: "c-4", LocationID: "loc-2", Owner: "u-1", Followers: []string{}},
		Record{Type: TypeOpportunity, ID: "o-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{}})
	for _, tc := range []struct {
		user, typ, loc string
		want           []string
	}{
		{"u-1", TypeContact, "loc-1", []string{"c-10", "c-2"}},
		{"u-1", TypeContact, "loc-2", []string{"c-4"}},
		{"u-1", TypeOpportunity, "loc-1", []string{"o-1"}},
		{"u-2", TypeContact, "loc-1", []string{"c-10", "c-3"}},
		{"u-9", TypeContact, "loc-1", []string{}},
	} {
		t.Run(tc.user+" "+tc.typ+" "+tc.loc, func(t *testing.T) {
			if got := m.SubjectRecords(tc.user, tc.typ, tc.loc); got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("SubjectRecords = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestEvents: the generator's events are valid (Events fails the test otherwise), the same for
// the same config, and use every op.
func TestEvents(t *testing.T) {
	for _, cfg := range []GenConfig{
		{Seed: 7},
		{Seed: 2, Users: 5, RecordIDs: 3, MaxFollowers: 2},
		{Seed: 3, Locations: []string{"loc-1", "loc-2", "loc-3"}},
	} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			events := Events(t, cfg, 3000)
			again := Events(t, cfg, 3000)
			ops := map[string]int{}
			for i, e := range events {
				if e.Seq != uint64(i+1) || mustMarshal(e) != mustMarshal(again[i]) {
					t.Fatalf("event %d: %s, then %s", i, mustMarshal(e), mustMarshal(again[i]))
				}
				ops[e.Op]++
			}
			if len(ops) != 7 {
				t.Fatalf("ops used: %v", ops)
			}
		})
	}
}
