package regovalue

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// InternTable holds shared terms for strings that occur in most facts (field
// names, roles, record types, actions). It is built once per engine and only
// read afterwards (the engine adds the policy's actions to it before), so
// reads need no lock. The parser asks it for every object key and string of
// a fact: it is a small open-addressing table with a hash of a few bytes,
// which answers faster than a map that hashes the whole string.
type InternTable struct {
	slots [internSlots]internSlot
	n     int
	more  map[string]*ast.Term // past maxInterned entries
}

type internSlot struct {
	s string
	t *ast.Term
}

const (
	internSlots = 64 // a power of two
	maxInterned = internSlots / 2
)

// NewInternTable returns the table of the field names and frequent values of
// users and records.
func NewInternTable() *InternTable {
	t := &InternTable{}
	for _, s := range []string{
		// user fields and values
		"id", "role", "location_ids", "assigned_data_only", "contacts_enabled", "opportunities_enabled",
		"admin", "user",
		// record fields and values
		"type", "location_id", "owner", "followers", "contact_id",
		"contact", "opportunity", "",
	} {
		t.Add(s)
	}
	return t
}

// internHash mixes the length and three bytes of s: the strings of the
// table differ there.
func internHash(s string) uint {
	n := uint(len(s))
	if n == 0 {
		return 0
	}
	return (n*0x9e3779b1 ^ uint(s[0])*0x85ebca6b ^ uint(s[n/2])*0xc2b2ae35 ^ uint(s[n-1])*0x27d4eb2f) >> 7
}

// Add adds the shared term of s (once; a string added before keeps its term).
func (t *InternTable) Add(s string) {
	if t.Get(s) != nil {
		return
	}
	if t.n >= maxInterned {
		if t.more == nil {
			t.more = map[string]*ast.Term{}
		}
		t.more[s] = ast.StringTerm(s)
		return
	}
	for i := internHash(s); ; i++ {
		if sl := &t.slots[i%internSlots]; sl.t == nil {
			sl.s, sl.t = s, ast.StringTerm(s)
			t.n++
			return
		}
	}
}

// Get returns the shared term of s; nil when s has none (or t is nil).
func (t *InternTable) Get(s string) *ast.Term {
	if t == nil {
		return nil
	}
	for i := internHash(s); ; i++ {
		sl := &t.slots[i%internSlots]
		if sl.t == nil {
			break
		}
		if sl.s == s {
			return sl.t
		}
	}
	if t.more != nil {
		return t.more[s]
	}
	return nil
}
