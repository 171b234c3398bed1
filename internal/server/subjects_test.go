package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// listLocations are the locations of the list tests' world.
func listLocations() []string { return []string{"loc-1", "loc-2", "loc-3"} }

// newListWorld makes a random world in the shared reference model: users in
// one or two locations, some admins, some unrestricted, some with a module
// off; records with owners (sometimes unassigned or a user not in the index)
// and up to 10 followers.
func newListWorld(tb testing.TB, seed uint64) *refmodel.Model {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 17))
	locs := listLocations()
	m := refmodel.New()
	apply := func(e refmodel.Event) {
		if err := m.Apply(e); err != nil {
			tb.Fatalf("reference model: %v", err)
		}
	}
	for i := 0; i < 40; i++ {
		u := refmodel.User{ID: fmt.Sprintf("u-%02d", i), Role: "user", AssignedDataOnly: rng.IntN(4) > 0,
			ContactsEnabled: rng.IntN(8) > 0, OpportunitiesEnabled: rng.IntN(8) > 0}
		if rng.IntN(10) == 0 {
			u.Role = "admin"
		}
		u.LocationIDs = []string{locs[rng.IntN(3)]}
		if rng.IntN(4) == 0 {
			if l := locs[rng.IntN(3)]; l != u.LocationIDs[0] {
				u.LocationIDs = append(u.LocationIDs, l)
			}
		}
		apply(refmodel.Event{Op: refmodel.OpUserUpsert, User: &u})
	}
	person := func() string {
		if rng.IntN(15) == 0 {
			return "u-gone" // named but not in the index
		}
		return fmt.Sprintf("u-%02d", rng.IntN(40))
	}
	for i := 0; i < 400; i++ {
		typ := []string{"contact", "opportunity"}[rng.IntN(2)]
		r := refmodel.Record{Type: typ, ID: fmt.Sprintf("%s-%03d", typ[:1], rng.IntN(300)), LocationID: locs[rng.IntN(3)], Followers: []string{}}
		if rng.IntN(6) > 0 {
			r.Owner = person()
		}
		for n := rng.IntN(11); len(r.Followers) < n; {
			if f := person(); f != r.Owner && !slices.Contains(r.Followers, f) {
				r.Followers = append(r.Followers, f)
			} else if rng.IntN(3) == 0 {
				break
			}
		}
		apply(refmodel.Event{Op: refmodel.OpRecordUpsert, Record: &r})
	}
	return m
}

// listWant is the list endpoint's answer in the reference model: unknown,
// all, or the sorted ids (nil for none). The list scope of the default
// policy (list.rego) on top of the model's SubjectRecords: an unknown subject,
// a subject outside the location or with the type's module off, an admin or
// unrestricted subject (all), or the records it owns or follows.
func listWant(m *refmodel.Model, subject, typ, loc string) (unknown, all bool, ids []string) {
	u, ok := m.Users[subject]
	if !ok {
		return true, false, nil
	}
	if !slices.Contains(u.LocationIDs, loc) || typ == "contact" && !u.ContactsEnabled || typ == "opportunity" && !u.OpportunitiesEnabled {
		return false, false, []string{}
	}
	if u.Role == "admin" || !u.AssignedDataOnly {
		return false, true, nil
	}
	return false, false, m.SubjectRecords(subject, typ, loc)
}

type listReply struct {
	All        *bool     `json:"all"`
	IDs        *[]string `json:"ids"`
	NextCursor *string   `json:"next_cursor"`
	AppliedSeq *uint64   `json:"applied_seq"`
	Error      *struct {
		Code string `json:"code"`
	} `json:"error"`
}

func mustDecode(tb testing.TB, ts *testServer, events ...string) []replication.Event {
	tb.Helper()
	evs, err := ts.repl.DecodeBatch(strings.NewReader(`{"events":[` + strings.Join(events, ",") + `]}`))
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

func listPage(tb testing.TB, ts *testServer, subject, query string) (int, listReply) {
	tb.Helper()
	rec := serve(ts.decision, http.MethodGet, "/v1/subjects/"+url.PathEscape(subject)+"/records?"+query, "", nil)
	var r listReply
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		tb.Fatalf("GET %s?%s: %d, not JSON: %s", subject, query, rec.Code, rec.Body)
	}
	return rec.Code, r
}

// TestSubjectRecordsAgainstModel pages through every subject's list for
// every type and location with several page sizes and compares it with the
// reference model; then changes owners and followers and does it again. The
// "assigned" lists must also agree with the view decision on every record.
func TestSubjectRecordsAgainstModel(t *testing.T) {
	m := newListWorld(t, 5)
	ts := newTestServer(t, nil)
	if _, err := ts.repl.LoadSnapshot(strings.NewReader(m.Snapshot(1))); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, limits []int) {
		subjects := append(m.UserIDs(), "u-gone", "nobody")
		n, paged := 0, 0
		for _, subject := range subjects {
			for _, typ := range []string{"contact", "opportunity"} {
				for _, loc := range append(listLocations(), "loc-9") {
					unknown, all, want := listWant(m, subject, typ, loc)
					limit := limits[n%len(limits)]
					n++
					got, code, reply := pageAll(t, ts, subject, typ, loc, limit)
					switch {
					case unknown:
						if code != 404 || reply.Error == nil || reply.Error.Code != "unknown_subject" {
							t.Fatalf("%s %s %s: %d %+v, want 404 unknown_subject", subject, typ, loc, code, reply)
						}
					case all:
						if code != 200 || reply.All == nil || !*reply.All || reply.IDs != nil {
							t.Fatalf("%s %s %s: %d %+v, want {\"all\": true}", subject, typ, loc, code, reply)
						}
					default:
						if code != 200 || !slices.Equal(got, want) {
							t.Fatalf("%s %s %s (limit %d): %d %q, want %q", subject, typ, loc, limit, code, got, want)
						}
						if len(want) > 0 {
							checkAgainstDecisions(t, ts, m, subject, typ, loc, got)
						}
						if len(want) > limit {
							paged++
						}
					}
				}
			}
		}
		if paged < 10 {
			t.Fatalf("only %d lists needed more than one page: the test does not exercise paging", paged)
		}
	}
	t.Run("after the snapshot", func(t *testing.T) { check(t, []int{1, 3, 7, 100, 1000}) })

	// Owners and followers change, in the model and in the index; the
	// reverse index and the lists follow: a new follower (never an 11th), a
	// present one removed, an owner set.
	rng := rand.New(rand.NewPCG(9, 9))
	var events []refmodel.Event
	keys := m.Keys()
	for i := 0; i < 300; i++ {
		r := m.Records[keys[rng.IntN(len(keys))]]
		u := fmt.Sprintf("u-%02d", rng.IntN(40))
		e := refmodel.Event{Seq: uint64(len(events) + 2), Type: r.Type, ID: r.ID, UserID: &u}
		switch rng.IntN(3) {
		case 0:
			if u == r.Owner || slices.Contains(r.Followers, u) || len(r.Followers) >= 10 {
				continue
			}
			e.Op = refmodel.OpFollowerAdd
		case 1:
			if len(r.Followers) == 0 {
				continue
			}
			f := r.Followers[rng.IntN(len(r.Followers))]
			e.Op, e.UserID = refmodel.OpFollowerRemove, &f
		default:
			e.Op = refmodel.OpOwnerSet
		}
		if err := m.Apply(e); err != nil {
			t.Fatalf("reference model: %v", err)
		}
		events = append(events, e)
	}
	batch, err := json.Marshal(map[string]any{"events": events})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ts.repl.DecodeBatch(bytes.NewReader(batch))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.repl.Apply(evs); err != nil {
		t.Fatal(err)
	}
	t.Run("after owner and follower changes", func(t *testing.T) { check(t, []int{2, 5, 1000}) })
}

// pageAll follows next_cursor to the end, checking every page: at most
// limit ids, no empty page but a first one, the same applied_seq.
func pageAll(tb testing.TB, ts *testServer, subject, typ, loc string, limit int) ([]string, int, listReply) {
	tb.Helper()
	q := url.Values{"type": {typ}, "location_id": {loc}, "limit": {fmt.Sprint(limit)}}
	var all []string
	for page := 0; ; page++ {
		code, r := listPage(tb, ts, subject, q.Encode())
		if code != 200 || r.IDs == nil {
			return all, code, r
		}
		if r.All == nil || *r.All || r.AppliedSeq == nil {
			tb.Fatalf("page %d: %+v: want all false and applied_seq", page, r)
		}
		if len(*r.IDs) > limit || page > 0 && len(*r.IDs) == 0 {
			tb.Fatalf("page %d: %d ids with limit %d", page, len(*r.IDs), limit)
		}
		all = append(all, *r.IDs...)
		if r.NextCursor == nil {
			if all == nil {
				all = []string{}
			}
			return all, code, r
		}
		if len(*r.IDs) != limit {
			tb.Fatalf("page %d: %d ids with limit %d, and a next_cursor", page, len(*r.IDs), limit)
		}
		q.Set("cursor", *r.NextCursor)
		if page > 1000 {
			tb.Fatal("paging does not end")
		}
	}
}

// checkAgainstDecisions: every listed record may be viewed, every other
// record of the type in the location may not.
func checkAgainstDecisions(tb testing.TB, ts *testServer, m *refmodel.Model, subject, typ, loc string, listed []string) {
	tb.Helper()
	for _, r := range m.Records {
		if r.Type != typ || r.LocationID != loc {
			continue
		}
		body := fmt.Sprintf(`{"subject":%q,"action":"view","resource":{"type":%q,"id":%q}}`, subject, typ, r.ID)
		rec := serve(ts.decision, http.MethodPost, "/v1/decision", body, nil)
		var d struct{ Allow bool }
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &d) != nil {
			tb.Fatalf("decision %s: %d %s", body, rec.Code, rec.Body)
		}
		if d.Allow != slices.Contains(listed, r.ID) {
			tb.Fatalf("%s view %s %s: allow %v, but listed %v", subject, typ, r.ID, d.Allow, slices.Contains(listed, r.ID))
		}
	}
}

// TestSubjectRecordsBadInput: every malformed list request is the error body of docs/reference.md §2.6
// body, never a list.
func TestSubjectRecordsBadInput(t *testing.T) {
	m := newListWorld(t, 3)
	ts := newTestServer(t, nil)
	ts.cfg.ConsistencyWait = 20 * time.Millisecond
	if _, err := ts.repl.LoadSnapshot(strings.NewReader(m.Snapshot(1))); err != nil {
		t.Fatal(err)
	}
	cur := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name, subject, query string
		code                 int
		errc                 string
	}{
		{"no type", "u-01", "location_id=loc-1", 400, "invalid_request"},
		{"empty type", "u-01", "type=&location_id=loc-1", 400, "invalid_request"},
		{"unknown type", "u-01", "type=lead&location_id=loc-1", 400, "invalid_request"},
		{"no location", "u-01", "type=contact", 400, "invalid_request"},
		{"empty location", "u-01", "type=contact&location_id=", 400, "invalid_request"},
		{"location with NUL", "u-01", "type=contact&location_id=a%00b", 400, "invalid_request"},
		{"limit 0", "u-01", "type=contact&location_id=loc-1&limit=0", 400, "invalid_request"},
		{"limit negative", "u-01", "type=contact&location_id=loc-1&limit=-5", 400, "invalid_request"},
		{"limit over 1000", "u-01", "type=contact&location_id=loc-1&limit=1001", 400, "invalid_request"},
		{"limit not a number", "u-01", "type=contact&location_id=loc-1&limit=ten", 400, "invalid_request"},
		{"cursor not base64", "u-01", "type=contact&location_id=loc-1&cursor=%21%21", 400, "invalid_request"},
		{"cursor of nothing", "u-01", "type=contact&location_id=loc-1&cursor=", 400, "invalid_request"},
		{"cursor with NUL", "u-01", "type=contact&location_id=loc-1&cursor=" + cur("a\x00"), 400, "invalid_request"},
		{"unknown parameter", "u-01", "type=contact&location_id=loc-1&page=2", 400, "invalid_request"},
		{"repeated parameter", "u-01", "type=contact&type=opportunity&location_id=loc-1", 400, "invalid_request"},
		{"malformed query", "u-01", "type=contact&location_id=loc-1&limit=%zz", 400, "invalid_request"},
		{"min_seq not a number", "u-01", "type=contact&location_id=loc-1&min_seq=x", 400, "invalid_request"},
		{"min_seq not applied", "u-01", "type=contact&location_id=loc-1&min_seq=2", 503, "index_behind"},
		{"unknown subject", "nobody", "type=contact&location_id=loc-1", 404, "unknown_subject"},
		{"subject too long", strings.Repeat("x", 600), "type=contact&location_id=loc-1", 404, "unknown_subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, r := listPage(t, ts, tc.subject, tc.query)
			if code != tc.code || r.Error == nil || r.Error.Code != tc.errc || r.IDs != nil || r.All != nil {
				t.Fatalf("%d %+v, want %d %s and no list", code, r, tc.code, tc.errc)
			}
		})
	}
	t.Run("paths", func(t *testing.T) {
		if _, err := ts.repl.Apply(mustDecode(t, ts, `{"seq":2,"op":"user.upsert","user":{"id":"a/b c%","role":"admin","location_ids":["loc-1"]}}`)); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			path string
			code int
			want string
		}{
			{"/v1/subjects/a%2Fb%20c%25/records?type=contact&location_id=loc-1", 200, `"all":true`},
			{"/v1/subjects/a/b%20c%25/records?type=contact&location_id=loc-1", 404, `"not_found"`},
			{"/v1/subjects//records?type=contact&location_id=loc-1", 404, `"not_found"`},
			{"/v1/subjects/u-01/other?type=contact&location_id=loc-1", 404, `"not_found"`},
			{"/v1/subjects/u-01?type=contact&location_id=loc-1", 404, `"not_found"`},
		} {
			rec := serve(ts.decision, http.MethodGet, tc.path, "", nil)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("GET %s: %d %s, want %d %s", tc.path, rec.Code, rec.Body, tc.code, tc.want)
			}
		}
	})
	t.Run("POST is 405", func(t *testing.T) {
		rec := serve(ts.decision, http.MethodPost, "/v1/subjects/u-01/records?type=contact&location_id=loc-1", "", nil)
		if rec.Code != 405 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("a cursor past the end is an empty last page", func(t *testing.T) {
		for id, u := range m.Users {
			if u.Role == "admin" || !u.AssignedDataOnly {
				continue
			}
			code, r := listPage(t, ts, id, "type=contact&location_id="+u.LocationIDs[0]+"&cursor="+cur("\U0010FFFF"))
			if code != 200 || r.IDs == nil || len(*r.IDs) != 0 || r.NextCursor != nil {
				t.Fatalf("%d %+v", code, r)
			}
			return
		}
		t.Fatal("no restricted user in the model")
	})
}
