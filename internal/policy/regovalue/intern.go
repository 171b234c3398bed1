package regovalue

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InternTable holds shared terms for strings that occur in most facts (field
// names, roles, record types, actions). It is built once per engine and only
// read afterwards (the engine adds the policy's actions to it before), so
// reads need no lock. The parser asks it for every object key and string of
// a fact: it is a small open-addressing table with a hash of a few bytes,
// which answers faster than a map that hashes the whole string.
type InternTable struct {
	// slots are two bytes each, the whole table two cache lines: a
	// decision's facts ask it for a score of strings with its caches cold
	// (BENCHMARKS.md, "Session 7: fused statements"); a slot's tag (bits
	// of the hash its position does not use) spares reading the header of
	// most other strings.
	slots [internSlots]internSlot
	n     int
	more  map[string]*ast.Term // past maxInterned entries
	// The shared terms, their strings' headers and bytes, next to each
	// other (a decision reads a dozen of them with its caches cold): the
	// terms and headers in these arrays, the bytes in one string (repack).
	// A hit compares the header its term's value points at.
	terms [maxInterned]ast.Term
	boxes [maxInterned]ast.String // (StringValue)
}

type internSlot struct {
	tag uint8
	i   uint8 // 1 + the index of its term in terms; 0: empty
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

// internTag is the slot tag of a hash: the bits above those of its position.
func internTag(h uint) uint8 { return uint8(h >> 6) }

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
	h := internHash(s)
	for i := h; ; i++ {
		if sl := &t.slots[i%internSlots]; sl.i == 0 {
			t.n++
			sl.tag, sl.i = internTag(h), uint8(t.n)
			t.boxes[t.n-1] = ast.String(s)
			t.repack()
			return
		}
	}
}

// repack copies the strings of the table's terms (in the order they were
// added) into one string, and points every term at it (Add runs before the
// table is read).
func (t *InternTable) repack() {
	var b strings.Builder
	for i := range t.n {
		b.WriteString(string(t.boxes[i]))
	}
	all := b.String()
	for i := range t.n {
		n := len(t.boxes[i])
		t.terms[i].Value = StringValue(&t.boxes[i], all[:n])
		all = all[n:]
	}
}

// Get returns the shared term of s; nil when s has none (or t is nil).
func (t *InternTable) Get(s string) *ast.Term {
	if t == nil {
		return nil
	}
	h := internHash(s)
	tag := internTag(h)
	for i := h; ; i++ {
		sl := &t.slots[i%internSlots]
		if sl.i == 0 {
			break
		}
		if sl.tag == tag && string(t.boxes[sl.i-1]) == s {
			return &t.terms[sl.i-1]
		}
	}
	if t.more != nil {
		return t.more[s]
	}
	return nil
}
