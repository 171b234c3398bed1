// Package hlfake is a fake HighLevel API v2 for the connector's tests and the README's demo
// (tools/highlevel-fake): the endpoints the connector reads (users search, which requires
// companyId, and get; a location, for its companyId; contacts search with searchAfter,
// opportunities search with startAfterId), bearer tokens per location,
// the Version header, rate-limit headers computed from the requests it got, and injected 429s
// and 500s. Its fixtures are generated from the field names of HighLevel's reference
// (docs/highlevel.md); no file of that reference is copied.
package hlfake

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fake is a HighLevel API v2 server. Lock Mu (or use Set) to read or change its fields.
type Fake struct {
	Mu    sync.Mutex
	Users map[string]*User
	// Locations are the sub-accounts, with their company: GET /locations/{locationId} answers
	// for them, and a users search lists a location's users only under its company.
	Locations map[string]*Location
	// Company is the company of the locations GenWorld makes ("co-1" from New).
	Company string
	// MismatchStatus is the answer to a users search whose companyId is not the location's
	// company (MoveLocation): 0 lists no users (HighLevel's reference does not say what it
	// answers, docs/highlevel.md); a status (400, 403, 422) answers it with that error, the
	// reference's BadRequestDTO shape.
	MismatchStatus int
	// Hits counts the requests per route ("GET /users/search", "GET /locations/{locationId}",
	// …), answered or not.
	Hits     map[string]int
	Records  map[string]map[string]*Record // kind → id → record
	Tokens   map[string]string             // token → location ("*" for every location)
	arrivals map[string][]time.Time        // resource → arrival times
	n        int                           // requests so far
	Fail500  int                           // every fail500-th request answers 500 (0: never)
	Fail429  int                           // every fail429-th request answers 429 with Retry-After: 1
	// FailListings answers 500 to every listing (users search, contacts search without filters,
	// opportunities search without id), so that only reads of one object work.
	FailListings bool
	// OverLimit counts the requests answered 429 because they were over Limit per Window.
	OverLimit int
	Limit     int // requests per window per resource before a 429
	Window    time.Duration
	// DailyLimit is the daily limit the rate-limit headers announce per resource
	// (X-RateLimit-Limit-Daily; X-RateLimit-Daily-Remaining counts down from it).
	DailyLimit int
	BadHeader  []string // requests without the right Version or token
}

type User struct {
	ID, Role                              string
	Locations                             []string
	AssignedDataOnly                      *bool
	ContactsEnabled, OpportunitiesEnabled *bool
}

// Location is a sub-account: the fields of HighLevel's GetLocationByIdSchema the fake serves.
type Location struct {
	ID, CompanyID, Name string
}

type Record struct {
	Kind, ID, Location, AssignedTo, ContactID string
	Followers                                 []string
}

// New returns an empty fake with HighLevel's limits of 100 requests per 10 s and 200,000 a day.
func New() *Fake {
	f := &Fake{Users: map[string]*User{}, Records: map[string]map[string]*Record{KindContact: {}, KindOpportunity: {}},
		Tokens: map[string]string{}, Locations: map[string]*Location{}, Company: "co-1", Hits: map[string]int{}, arrivals: map[string][]time.Time{}, Limit: 100, Window: 10 * time.Second, DailyLimit: 200000}
	return f
}

// GenWorld fills the fake with locs locations of users and records, anomalies included.
func (f *Fake) GenWorld(seed uint64, locs, usersPerLoc, recordsPerLoc int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	f.Mu.Lock()
	defer f.Mu.Unlock()
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
		if f.Locations[loc] == nil {
			f.Locations[loc] = &Location{ID: loc, CompanyID: f.Company, Name: "Location " + loc}
		}
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
			f.Users[id] = &User{ID: id, Role: role, Locations: locations, AssignedDataOnly: b(), ContactsEnabled: b(), OpportunitiesEnabled: b()}
			inLoc = append(inLoc, id)
		}
		for i := range recordsPerLoc {
			kind := KindContact
			if i%3 == 2 {
				kind = KindOpportunity
			}
			r := &Record{Kind: kind, ID: fmt.Sprintf("%s-%d-%03d", kind[:1], l, i), Location: loc}
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
			if kind == KindOpportunity {
				r.ContactID = fmt.Sprintf("c-%d-%03d", l, i-2)
			}
			f.Records[kind][r.ID] = r
		}
	}
}

// MoveLocation moves a location, its users and records with it, to another company: a users
// search under the old company then no longer lists them (MismatchStatus says how), and
// GET /locations/{locationId} answers the new one.
func (f *Fake) MoveLocation(loc, company string) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if l := f.Locations[loc]; l != nil {
		l.CompanyID = company
	}
}

func (f *Fake) Set(fn func(f *Fake)) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	fn(f)
}

// MaxInWindow is the largest number of requests to one resource that arrived within any window.
func (f *Fake) MaxInWindow(window time.Duration) (int, string) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
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

func (f *Fake) Total() int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.n
}

func fakeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"statusCode": code, "message": msg})
}

func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	now := time.Now()
	f.n++
	f.Hits[route(r)]++
	var loc string
	var body struct {
		LocationID  string          `json:"locationId"`
		PageLimit   int             `json:"pageLimit"`
		SearchAfter json.RawMessage `json:"searchAfter"`
		Filters     []filter        `json:"filters"`
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
	case strings.HasPrefix(r.URL.Path, "/locations/"):
		loc = strings.TrimPrefix(r.URL.Path, "/locations/")
	default:
		loc = r.URL.Query().Get("locationId")
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	tl, ok := f.Tokens[tok]
	if r.Header.Get("Version") != apiVersion || !ok || (tl != "*" && tl != loc && loc != "") {
		f.BadHeader = append(f.BadHeader, r.Method+" "+r.URL.String())
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
		if now.Sub(t) < f.Window {
			inWindow++
		}
	}
	w.Header().Set("X-RateLimit-Max", strconv.Itoa(f.Limit))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(max(0, f.Limit-inWindow)))
	w.Header().Set("X-RateLimit-Interval-Milliseconds", strconv.Itoa(int(f.Window/time.Millisecond)))
	// The five headers of HighLevel's docs/oauth/Authorization.md ("What are current rate limits
	// for API 2.0?"), GoHighLevel/highlevel-api-docs.
	w.Header().Set("X-RateLimit-Limit-Daily", strconv.Itoa(f.DailyLimit))
	w.Header().Set("X-RateLimit-Daily-Remaining", strconv.Itoa(max(0, f.DailyLimit-len(ts))))
	switch {
	case inWindow > f.Limit:
		f.OverLimit++
		w.Header().Set("Retry-After", "1")
		fakeErr(w, 429, "too many requests")
		return
	case f.Fail429 > 0 && f.n%f.Fail429 == 0:
		w.Header().Set("Retry-After", "1")
		fakeErr(w, 429, "injected")
		return
	case f.FailListings && (r.URL.Path == "/users/search" || r.URL.Path == "/contacts/search" && len(body.Filters) == 0 ||
		r.URL.Path == "/opportunities/search" && r.URL.Query().Get("id") == ""):
		fakeErr(w, 500, "injected: listings fail")
		return
	case f.Fail500 > 0 && f.n%f.Fail500 == 0:
		fakeErr(w, 500, "injected")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/users/search":
		// apps/users.json marks companyId required; a 400 answers with BadRequestDTO
		// (common/common-schemas.json), as the fake's other errors.
		co := q.Get("companyId")
		if co == "" {
			fakeErr(w, 400, "companyId is required")
			return
		}
		if l := f.Locations[loc]; l != nil && l.CompanyID != co && f.MismatchStatus != 0 {
			fakeErr(w, f.MismatchStatus, "the location "+loc+" does not belong to the company "+co)
			return
		}
		us := []map[string]any{}
		for _, id := range sortedKeys(f.Users) {
			// a search within a company: a location of another company has no users there
			if u := f.Users[id]; slices.Contains(u.Locations, loc) && f.Locations[loc] != nil && f.Locations[loc].CompanyID == co {
				us = append(us, u.json())
			}
		}
		skip, _ := strconv.Atoi(q.Get("skip"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		total := len(us)
		us = us[min(skip, len(us)):min(skip+limit, len(us))]
		enc.Encode(map[string]any{"users": us, "count": total})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/locations/") && loc != "" && !strings.Contains(loc, "/"):
		// GET /locations/{locationId} of apps/locations.json: GetLocationByIdSuccessfulResponseDto,
		// its location object with documented fields only; the reference documents no 404, so an
		// unknown location is a 400 (BadRequestDTO).
		l, ok := f.Locations[loc]
		if !ok {
			fakeErr(w, 400, "location not found")
			return
		}
		enc.Encode(map[string]any{"location": map[string]any{"id": l.ID, "companyId": l.CompanyID, "name": l.Name}})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/users/"):
		u, ok := f.Users[strings.TrimPrefix(r.URL.Path, "/users/")]
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
		for _, id := range sortedKeys(f.Records[KindContact]) {
			c := f.Records[KindContact][id]
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
		for _, id := range sortedKeys(f.Records[KindOpportunity]) {
			o := f.Records[KindOpportunity][id]
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

// route is a request's method and path pattern, the key of Hits.
func route(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/locations/"):
		p = "/locations/{locationId}"
	case strings.HasPrefix(p, "/users/") && p != "/users/search":
		p = "/users/{userId}"
	}
	return r.Method + " " + p
}

func (u *User) json() map[string]any {
	perms := map[string]any{"campaignsEnabled": true}
	for k, v := range map[string]*bool{"assignedDataOnly": u.AssignedDataOnly, "contactsEnabled": u.ContactsEnabled, "opportunitiesEnabled": u.OpportunitiesEnabled} {
		if v != nil {
			perms[k] = *v
		}
	}
	return map[string]any{"id": u.ID, "name": "User " + u.ID, "email": u.ID + "@example.test", "deleted": false,
		"roles": map[string]any{"type": "account", "role": u.Role, "locationIds": u.Locations}, "permissions": perms}
}

func (r *Record) json(contact bool) map[string]any {
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

// The record kinds, as the index names them.
const (
	KindContact     = "contact"
	KindOpportunity = "opportunity"
)

// apiVersion is the Version header HighLevel's API v2 requires.
const apiVersion = "2021-07-28"

type filter struct {
	Field    string `json:"field"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
