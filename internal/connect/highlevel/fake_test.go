package highlevel

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// fakeHL is a HighLevel API v2 server for tests: the endpoints the connector reads (users search
// and get, contacts search with searchAfter, opportunities search with startAfterId), bearer
// tokens per location, the Version header, rate-limit headers computed from the requests it got,
// and injected 429s and 500s. Its fixtures are generated, written from the field names of
// HighLevel's reference (docs/highlevel.md).
type fakeHL struct {
	mu        sync.Mutex
	users     map[string]*fUser
	records   map[string]map[string]*fRec // kind → id → record
	tokens    map[string]string           // token → location ("*" for every location)
	arrivals  map[string][]time.Time      // resource → arrival times
	n         int                         // requests so far
	fail500   int                         // every fail500-th request answers 500 (0: never)
	fail429   int                         // every fail429-th request answers 429 with Retry-After: 1
	limit     int                         // requests per window per resource before a 429
	window    time.Duration
	badHeader []string // requests without the right Version or token
	srv       *httptest.Server
}

type fUser struct {
	ID, Role                              string
	Locations                             []string
	AssignedDataOnly                      *bool
	ContactsEnabled, OpportunitiesEnabled *bool
}

type fRec struct {
	Kind, ID, Location, AssignedTo, ContactID string
	Followers                                 []string
}

func newFake(tb testing.TB) *fakeHL {
	f := &fakeHL{users: map[string]*fUser{}, records: map[string]map[string]*fRec{kindContact: {}, kindOpportunity: {}},
		tokens: map[string]string{}, arrivals: map[string][]time.Time{}, limit: 100, window: 10 * time.Second}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	tb.Cleanup(f.srv.Close)
	return f
}

// genWorld fills the fake with locs locations of users and records, anomalies included.
func (f *fakeHL) genWorld(seed uint64, locs, usersPerLoc, recordsPerLoc int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	f.mu.Lock()
	defer f.mu.Unlock()
	b := func() *bool {
		switch rng.IntN(3) {
		case 0:
			return nil
		case 1:
			v := true
			return &v
		}
		v := false
		return &v
	}
	for l := range locs {
		loc := fmt.Sprintf("loc-%d", l)
		var inLoc []string
		for u := range usersPerLoc {
			id := fmt.Sprintf("u-%d-%02d", l, u)
			role := []string{"user", "user", "user", "admin"}[rng.IntN(4)]
			if u == 7 {
				role = "superhero" // an unknown role: written as deleted
			}
			locations := []string{loc}
			if rng.IntN(5) == 0 {
				locations = append(locations, fmt.Sprintf("loc-%d", rng.IntN(locs)))
			}
			f.users[id] = &fUser{ID: id, Role: role, Locations: locations, AssignedDataOnly: b(), ContactsEnabled: b(), OpportunitiesEnabled: b()}
			inLoc = append(inLoc, id)
		}
		for i := range recordsPerLoc {
			kind := kindContact
			if i%3 == 2 {
				kind = kindOpportunity
			}
			r := &fRec{Kind: kind, ID: fmt.Sprintf("%s-%d-%03d", kind[:1], l, i), Location: loc}
			if rng.IntN(4) > 0 {
				r.AssignedTo = inLoc[rng.IntN(len(inLoc))]
			}
			n := rng.IntN(4)
			if i%17 == 0 {
				n = 13 // more than 10 followers
			}
			for range n {
				r.Followers = append(r.Followers, inLoc[rng.IntN(len(inLoc))]) // duplicates and the owner happen
			}
			if kind == kindOpportunity {
				r.ContactID = fmt.Sprintf("c-%d-%03d", l, i-2)
			}
			f.records[kind][r.ID] = r
		}
	}
}

// model is what the index must hold for the fake's world (SPEC §4's rules for bad facts).
func (f *fakeHL) model(locations []string) *refmodel.Model {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := refmodel.New()
	for _, u := range f.users {
		if u.Role != "admin" && u.Role != "user" {
			continue
		}
		mu := refmodel.User{ID: u.ID, Role: u.Role, LocationIDs: slices.Compact(slices.Sorted(slices.Values(u.Locations))),
			ContactsEnabled: true, OpportunitiesEnabled: true}
		if u.AssignedDataOnly != nil {
			mu.AssignedDataOnly = *u.AssignedDataOnly
		}
		if u.ContactsEnabled != nil {
			mu.ContactsEnabled = *u.ContactsEnabled
		}
		if u.OpportunitiesEnabled != nil {
			mu.OpportunitiesEnabled = *u.OpportunitiesEnabled
		}
		m.Users[u.ID] = mu
	}
	for kind, rs := range f.records {
		for _, r := range rs {
			if !slices.Contains(locations, r.Location) {
				continue
			}
			var fs []string
			for _, u := range r.Followers {
				if u != r.AssignedTo && !slices.Contains(fs, u) {
					fs = append(fs, u)
				}
			}
			slices.Sort(fs)
			if len(fs) > 10 {
				fs = fs[:10]
			}
			if fs == nil {
				fs = []string{}
			}
			rec := refmodel.Record{Type: kind, ID: r.ID, LocationID: r.Location, Owner: r.AssignedTo, Followers: fs}
			if kind == kindOpportunity {
				rec.ContactID = r.ContactID
			}
			m.Records[refmodel.Key{Type: kind, ID: r.ID}] = rec
		}
	}
	return m
}

func (f *fakeHL) set(fn func(f *fakeHL)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// maxInWindow is the largest number of requests to one resource that arrived within any window.
func (f *fakeHL) maxInWindow(window time.Duration) (int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	best, which := 0, ""
	for res, ts := range f.arrivals {
		j := 0
		for i := range ts {
			for ts[i].Sub(ts[j]) >= window {
				j++
			}
			if n := i - j + 1; n > best {
				best, which = n, res
			}
		}
	}
	return best, which
}

func (f *fakeHL) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func fakeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"statusCode": code, "message": msg})
}

func (f *fakeHL) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.n++
	var loc string
	var body struct {
		LocationID  string          `json:"locationId"`
		PageLimit   int             `json:"pageLimit"`
		SearchAfter json.RawMessage `json:"searchAfter"`
		Filters     []searchFilter  `json:"filters"`
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/contacts/search":
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			fakeErr(w, 422, "bad body")
			return
		}
		loc = body.LocationID
	case r.URL.Path == "/opportunities/search":
		loc = r.URL.Query().Get("location_id")
	default:
		loc = r.URL.Query().Get("locationId")
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	tl, ok := f.tokens[tok]
	if r.Header.Get("Version") != APIVersion || !ok || (tl != "*" && tl != loc && loc != "") {
		f.badHeader = append(f.badHeader, r.Method+" "+r.URL.String())
		fakeErr(w, 401, "bad token or version")
		return
	}
	res := loc
	if res == "" {
		res = "company"
	}
	ts := append(f.arrivals[res], now)
	f.arrivals[res] = ts
	inWindow := 0
	for _, t := range ts {
		if now.Sub(t) < f.window {
			inWindow++
		}
	}
	w.Header().Set("X-RateLimit-Max", strconv.Itoa(f.limit))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(max(0, f.limit-inWindow)))
	w.Header().Set("X-RateLimit-Interval-Milliseconds", strconv.Itoa(int(f.window/time.Millisecond)))
	w.Header().Set("X-RateLimit-Daily-Remaining", "190000")
	switch {
	case inWindow > f.limit:
		w.Header().Set("Retry-After", "1")
		fakeErr(w, 429, "too many requests")
		return
	case f.fail429 > 0 && f.n%f.fail429 == 0:
		w.Header().Set("Retry-After", "1")
		fakeErr(w, 429, "injected")
		return
	case f.fail500 > 0 && f.n%f.fail500 == 0:
		fakeErr(w, 500, "injected")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/users/search":
		var us []map[string]any
		for _, id := range sortedKeys(f.users) {
			if u := f.users[id]; slices.Contains(u.Locations, loc) {
				us = append(us, u.json())
			}
		}
		skip, _ := strconv.Atoi(q.Get("skip"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		total := len(us)
		us = us[min(skip, len(us)):min(skip+limit, len(us))]
		enc.Encode(map[string]any{"users": us, "count": total})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/users/"):
		u, ok := f.users[strings.TrimPrefix(r.URL.Path, "/users/")]
		if !ok {
			fakeErr(w, 404, "user not found")
			return
		}
		enc.Encode(u.json())
	case r.URL.Path == "/contacts/search":
		var out []map[string]any
		after := ""
		if len(body.SearchAfter) > 0 {
			var sa []any
			json.Unmarshal(body.SearchAfter, &sa)
			if len(sa) == 2 {
				after, _ = sa[1].(string)
			}
		}
		total := 0
		for _, id := range sortedKeys(f.records[kindContact]) {
			c := f.records[kindContact][id]
			if c.Location != loc || (len(body.Filters) == 1 && c.ID != body.Filters[0].Value) {
				continue
			}
			total++
			if id > after && len(out) < body.PageLimit {
				out = append(out, c.json(true))
			}
		}
		enc.Encode(map[string]any{"contacts": out, "total": total})
	case r.Method == http.MethodGet && r.URL.Path == "/opportunities/search":
		limit, _ := strconv.Atoi(q.Get("limit"))
		after, one := q.Get("startAfterId"), q.Get("id")
		var out []map[string]any
		total := 0
		for _, id := range sortedKeys(f.records[kindOpportunity]) {
			o := f.records[kindOpportunity][id]
			if o.Location != loc || (one != "" && o.ID != one) {
				continue
			}
			total++
			if id > after && len(out) < limit {
				out = append(out, o.json(false))
			}
		}
		meta := map[string]any{"total": total, "currentPage": 1}
		if len(out) > 0 {
			meta["startAfterId"] = out[len(out)-1]["id"]
			meta["startAfter"] = 1625203104328
		}
		enc.Encode(map[string]any{"opportunities": out, "meta": meta})
	default:
		fakeErr(w, 404, "no route "+r.Method+" "+r.URL.Path)
	}
}

func (u *fUser) json() map[string]any {
	perms := map[string]any{"campaignsEnabled": true}
	for k, v := range map[string]*bool{"assignedDataOnly": u.AssignedDataOnly, "contactsEnabled": u.ContactsEnabled, "opportunitiesEnabled": u.OpportunitiesEnabled} {
		if v != nil {
			perms[k] = *v
		}
	}
	return map[string]any{"id": u.ID, "name": "User " + u.ID, "email": u.ID + "@example.test", "deleted": false,
		"roles": map[string]any{"type": "account", "role": u.Role, "locationIds": u.Locations}, "permissions": perms}
}

func (r *fRec) json(contact bool) map[string]any {
	m := map[string]any{"id": r.ID, "locationId": r.Location, "followers": r.Followers}
	if r.Followers == nil {
		delete(m, "followers")
	}
	if r.AssignedTo != "" {
		m["assignedTo"] = r.AssignedTo
	}
	if contact {
		m["searchAfter"] = []any{1700000000000, r.ID}
		m["firstName"] = "Contact"
	} else {
		m["contactId"] = r.ContactID
		m["status"] = "open"
		m["name"] = "Deal " + r.ID
	}
	return m
}
