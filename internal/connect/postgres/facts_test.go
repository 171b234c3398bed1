package postgres

import (
	"fmt"
	"slices"
	"testing"
)

func TestRecordFact(t *testing.T) {
	s := func(v string) *string { return &v }
	many := make([]string, 12)
	for i := range many {
		many[i] = fmt.Sprintf("u-%02d", 11-i) // not sorted: the fact keeps the 10 smallest
	}
	slices.Sort(many)
	cases := []struct {
		name      string
		k         recKey
		row       recRow
		ok        bool
		followers []string
		dup       bool
		want      *Record
		anomalies []string
	}{
		{"absent", recKey{"contact", "c-1"}, recRow{}, false, []string{"u-1"}, false, nil, nil},
		{"plain", recKey{"contact", "c-1"}, recRow{Loc: s("l"), Owner: s("u-1")}, true, []string{"u-2"}, false,
			&Record{Type: "contact", ID: "c-1", LocationID: "l", Owner: "u-1", Followers: []string{"u-2"}}, nil},
		{"owner among followers", recKey{"contact", "c-1"}, recRow{Loc: s("l"), Owner: s("u-1")}, true, []string{"u-1", "u-2"}, false,
			&Record{Type: "contact", ID: "c-1", LocationID: "l", Owner: "u-1", Followers: []string{"u-2"}}, []string{AnomalyOwnerFollower}},
		{"duplicates", recKey{"contact", "c-1"}, recRow{Loc: s("l")}, true, []string{"u-2"}, true,
			&Record{Type: "contact", ID: "c-1", LocationID: "l", Followers: []string{"u-2"}}, []string{AnomalyDuplicateFollower}},
		{"12 followers", recKey{"contact", "c-1"}, recRow{Loc: s("l")}, true, many, false,
			&Record{Type: "contact", ID: "c-1", LocationID: "l", Followers: many[:10]}, []string{AnomalyTooManyFollowers}},
		{"no location", recKey{"contact", "c-1"}, recRow{Owner: s("u-1")}, true, nil, false, nil, []string{AnomalyMissingField}},
		{"contact_id of an opportunity", recKey{"opportunity", "o-1"}, recRow{Loc: s("l"), Contact: s("c-1")}, true, nil, false,
			&Record{Type: "opportunity", ID: "o-1", LocationID: "l", Followers: []string{}, ContactID: "c-1"}, nil},
		{"an id with NUL", recKey{"contact", "c\x00"}, recRow{Loc: s("l")}, true, nil, false, nil, []string{AnomalyInvalidID}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			f := recordFact(tc.k, tc.row, tc.ok, tc.followers, tc.dup, func(kind, _, _ string) { got = append(got, kind) })
			if !sameJSON(f, tc.want) || (f == nil) != (tc.want == nil) {
				t.Fatalf("fact = %+v, want %+v", f, tc.want)
			}
			if !slices.Equal(got, tc.anomalies) {
				t.Fatalf("anomalies %v, want %v", got, tc.anomalies)
			}
		})
	}
}

func TestUserFact(t *testing.T) {
	s := func(v string) *string { return &v }
	b := func(v bool) *bool { return &v }
	cases := []struct {
		name    string
		row     userRow
		want    *User
		anomaly string
	}{
		{"defaults", userRow{Role: s("user"), Locs: []string{"l1", "l1", ""}},
			&User{ID: "u", Role: "user", LocationIDs: []string{"l1"}, ContactsEnabled: true, OpportunitiesEnabled: true}, ""},
		{"set", userRow{Role: s("admin"), Locs: []string{}, ADO: b(true), CE: b(false), OE: b(false)},
			&User{ID: "u", Role: "admin", LocationIDs: []string{}, AssignedDataOnly: true}, ""},
		{"unknown role", userRow{Role: s("guest")}, nil, AnomalyUnknownRole},
		{"NULL role", userRow{}, nil, AnomalyUnknownRole},
		{"NULL location_ids", userRow{Role: s("user"), NoLoc: true}, nil, AnomalyMissingField},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			f := userFact("u", tc.row, true, func(kind, _, _ string) { got = kind })
			if !sameJSON(f, tc.want) || got != tc.anomaly {
				t.Fatalf("fact = %+v (%q), want %+v (%q)", f, got, tc.want, tc.anomaly)
			}
		})
	}
}
