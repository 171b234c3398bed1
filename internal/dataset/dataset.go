// Package dataset generates a deterministic synthetic CRM world — users,
// contacts and opportunities with owners and 1–10 followers — as snapshot
// NDJSON, and a matching mix of decision requests. Tests, benchmarks and the
// load tool use it so that they all speak about the same facts.
//
// Nothing is held in memory: record i and request i are pure functions of i.
package dataset

import (
	"bufio"
	"io"
	"strconv"

	"github.com/crmauthz/crmauthz/internal/index"
)

// Config sizes the world. Zero fields take DefaultConfig's.
type Config struct {
	Records   int
	Users     int
	Locations int
	// OpportunityEvery makes every n-th record an opportunity (5: 20%).
	OpportunityEvery int
}

// World is a sized Config.
type World struct{ c Config }

// DefaultConfig is the world of the benchmarks: 1,000,000 records, 10,000 users, 5 locations,
// every 5th record an opportunity.
func DefaultConfig() Config {
	return Config{Records: 1_000_000, Users: 10_000, Locations: 5, OpportunityEvery: 5}
}

// New fills a zero (or negative) field from DefaultConfig, and raises Users to 12 per location
// (room for an owner and 10 distinct followers in each).
func New(c Config) World {
	d := DefaultConfig()
	if c.Records <= 0 {
		c.Records = d.Records
	}
	if c.Users <= 0 {
		c.Users = d.Users
	}
	if c.Locations <= 0 {
		c.Locations = d.Locations
	}
	if c.Users < c.Locations*12 {
		c.Users = c.Locations * 12
	}
	if c.OpportunityEvery <= 0 {
		c.OpportunityEvery = d.OpportunityEvery
	}
	return World{c: c}
}

// Config returns the sized configuration.
func (w World) Config() Config { return w.c }

// User is one generated user.
type User struct {
	ID               string
	Role             string
	Location         string
	AssignedDataOnly bool
}

// UserAt returns user i: one location each (i mod Locations); every 100th an
// admin, every 10th (+1) unrestricted, the rest restricted to assigned data.
func (w World) UserAt(i int) User {
	u := User{ID: "u-" + strconv.Itoa(i), Role: index.RoleUser, Location: w.loc(i % w.c.Locations), AssignedDataOnly: true}
	switch {
	case i%100 == 0:
		u.Role, u.AssignedDataOnly = index.RoleAdmin, false
	case i%10 == 1:
		u.AssignedDataOnly = false
	}
	return u
}

// Record is one generated record.
type Record struct {
	Type, ID, Location, Owner string
	Followers                 []string
}

func (w World) loc(l int) string { return "loc-" + strconv.Itoa(l) }

// userIn returns the k-th user (mod the users per location) of location l.
func (w World) userIn(l, k int) int {
	per := w.c.Users / w.c.Locations
	return (k%per)*w.c.Locations + l
}

func mix(x uint64) uint64 { // splitmix64
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// RecordAt returns record i: in location i mod Locations, owned by a user of
// that location (every 50th unassigned), with 1–10 distinct followers from it.
func (w World) RecordAt(i int) Record {
	l := i % w.c.Locations
	r := Record{Type: index.TypeContact, ID: "c-" + strconv.Itoa(i), Location: w.loc(l)}
	if i%w.c.OpportunityEvery == 0 {
		r.Type, r.ID = index.TypeOpportunity, "o-"+strconv.Itoa(i)
	}
	h := mix(uint64(i))
	per := w.c.Users / w.c.Locations
	start := int(h % uint64(per))
	if i%50 != 7 {
		r.Owner = "u-" + strconv.Itoa(w.userIn(l, start))
	}
	n := 1 + int((h>>32)%10)
	r.Followers = make([]string, n)
	for f := 0; f < n; f++ {
		r.Followers[f] = "u-" + strconv.Itoa(w.userIn(l, start+1+f)) // distinct, never the owner
	}
	return r
}

// AppendJSON appends the record as the JSON object of the record of docs/reference.md §1.1.
func (r Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = strconv.AppendQuote(b, r.Type)
	b = append(b, `,"id":`...)
	b = strconv.AppendQuote(b, r.ID)
	b = append(b, `,"location_id":`...)
	b = strconv.AppendQuote(b, r.Location)
	b = append(b, `,"owner":`...)
	b = strconv.AppendQuote(b, r.Owner)
	b = append(b, `,"followers":[`...)
	for j, f := range r.Followers {
		if j > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, f)
	}
	return append(b, "]}"...)
}

// WriteSnapshot writes the world as snapshot NDJSON with the given seq.
func (w World) WriteSnapshot(out io.Writer, seq uint64) error {
	bw := bufio.NewWriterSize(out, 256<<10)
	var b []byte
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "}\n"...)
	for i := 0; i < w.c.Users; i++ {
		u := w.UserAt(i)
		b = append(b, `{"user":{"id":`...)
		b = strconv.AppendQuote(b, u.ID)
		b = append(b, `,"role":`...)
		b = strconv.AppendQuote(b, u.Role)
		b = append(b, `,"location_ids":[`...)
		b = strconv.AppendQuote(b, u.Location)
		b = append(b, `],"assigned_data_only":`...)
		b = strconv.AppendBool(b, u.AssignedDataOnly)
		b = append(b, "}}\n"...)
		if len(b) > 128<<10 {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	for i := 0; i < w.c.Records; i++ {
		b = append(b, `{"record":`...)
		b = w.RecordAt(i).AppendJSON(b)
		b = append(b, "}\n"...)
		if len(b) > 128<<10 {
			if _, err := bw.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// Request is one decision request of the load mix.
type Request struct {
	Subject, Action, Type, ID, Target string // Target "" = none
}

// allActions are the six actions of the access model.
var allActions = index.Actions()

// RequestAt returns request i of a mix that reaches every rule: the subject is
// the record's owner, one of its followers, another user of its location, a
// user of another location, or unknown; the record is sometimes missing.
func (w World) RequestAt(i int) Request {
	h := mix(uint64(i) ^ 0xabcdef)
	ri := int(h % uint64(w.c.Records))
	rec := w.RecordAt(ri)
	req := Request{Action: allActions[(h>>20)%6], Type: rec.Type, ID: rec.ID}
	l := ri % w.c.Locations
	switch (h >> 24) % 16 {
	case 0, 1, 2, 3:
		req.Subject = rec.Owner
		if req.Subject == "" {
			req.Subject = rec.Followers[0]
		}
	case 4, 5, 6, 7, 8:
		req.Subject = rec.Followers[int(h>>28)%len(rec.Followers)]
	case 9, 10, 11:
		req.Subject = "u-" + strconv.Itoa(w.userIn(l, int(h>>32)))
	case 12, 13:
		req.Subject = "u-" + strconv.Itoa(w.userIn((l+1)%w.c.Locations, int(h>>32)))
	case 14:
		req.Subject = "u-nobody-" + strconv.Itoa(i%97)
	case 15:
		req.Subject = rec.Followers[0]
		req.ID += "-missing"
	}
	switch req.Action {
	case index.ActionAddFollower, index.ActionChangeOwner:
		req.Target = "u-" + strconv.Itoa(w.userIn(l, int(h>>40)))
	case index.ActionRemoveFollower:
		req.Target = rec.Followers[len(rec.Followers)-1]
		if (h>>44)%2 == 0 {
			req.Target = req.Subject
		}
	}
	return req
}

// AppendJSON appends the request as the body of POST /v1/decision.
func (r Request) AppendJSON(b []byte) []byte {
	b = append(b, `{"subject":`...)
	b = strconv.AppendQuote(b, r.Subject)
	b = append(b, `,"action":`...)
	b = strconv.AppendQuote(b, r.Action)
	b = append(b, `,"resource":{"type":`...)
	b = strconv.AppendQuote(b, r.Type)
	b = append(b, `,"id":`...)
	b = strconv.AppendQuote(b, r.ID)
	b = append(b, '}')
	if r.Target != "" {
		b = append(b, `,"target":`...)
		b = strconv.AppendQuote(b, r.Target)
	}
	return append(b, '}')
}
