package index

import (
	"encoding/json"
	"fmt"
	"slices"
)

// The records bucket holds each record as the JSON encoding/json makes of Record (docs/design.md).
// Every replication event on a record decodes and re-encodes it, so these two do it by hand for
// the common case, ids of printable ASCII without `"`, `\`, `<`, `>` or `&`, and leave everything
// else to encoding/json: the bytes stored, and the Record read, are the same either way
// (TestRecordJSONMatchesEncodingJSON).

// plainJSON tells whether encoding/json writes s as its bytes between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// appendRecordJSON appends json.Marshal(r) to dst.
func appendRecordJSON(dst []byte, r *Record) ([]byte, error) {
	plain := plainJSON(r.Type) && plainJSON(r.ID) && plainJSON(r.LocationID) && plainJSON(r.Owner) &&
		plainJSON(r.ContactID)
	for _, f := range r.Followers {
		plain = plain && plainJSON(f)
	}
	if !plain || r.Followers == nil {
		v, err := json.Marshal(r)
		return append(dst, v...), err
	}
	// One allocation of the exact size (growing from nil took four or five, ~5 % of a random
	// replication event's CPU; BENCHMARKS.md, "Session 9 (2026-12-07): the delta log's entries").
	n := len(`{"type":"","id":"","location_id":"","owner":"","followers":[]}`) + len(r.Type) + len(r.ID) +
		len(r.LocationID) + len(r.Owner)
	for _, f := range r.Followers {
		n += len(f) + 3
	}
	if r.ContactID != "" {
		n += len(`,"contact_id":""`) + len(r.ContactID)
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, `{"type":"`...)
	dst = append(dst, r.Type...)
	dst = append(dst, `","id":"`...)
	dst = append(dst, r.ID...)
	dst = append(dst, `","location_id":"`...)
	dst = append(dst, r.LocationID...)
	dst = append(dst, `","owner":"`...)
	dst = append(dst, r.Owner...)
	dst = append(dst, `","followers":[`...)
	for i, f := range r.Followers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, f...)
		dst = append(dst, '"')
	}
	dst = append(dst, ']')
	if r.ContactID != "" {
		dst = append(dst, `,"contact_id":"`...)
		dst = append(dst, r.ContactID...)
		dst = append(dst, '"')
	}
	return append(dst, '}'), nil
}

// decodeRecord decodes a stored record (Followers non-nil).
func decodeRecord(v []byte) (Record, error) {
	if r, ok := decodePlainRecord(v); ok {
		return r, nil
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, fmt.Errorf("index: corrupt record %q: %w", v, err)
	}
	if r.Followers == nil {
		r.Followers = []string{}
	}
	return r, nil
}

// recordScanner reads the exact bytes appendRecordJSON writes for plain ids; any surprise (an
// escape, another key order, white space) sets bad and the caller falls back to encoding/json.
// v is the stored value copied into one string: the ids read are substrings of it, one
// allocation per record instead of one per id (a caller that keeps one id keeps the record's
// whole value, ~150 bytes; none in this module keeps decoded records).
type recordScanner struct {
	v   string
	bad bool
}

func (s *recordScanner) lit(l string) {
	if s.bad || len(s.v) < len(l) || s.v[:len(l)] != l {
		s.bad = true
		return
	}
	s.v = s.v[len(l):]
}

// str reads the rest of a string up to its closing quote (the opening one was part of a lit).
func (s *recordScanner) str() string {
	if s.bad {
		return ""
	}
	for i := 0; i < len(s.v); i++ {
		switch c := s.v[i]; {
		case c == '"':
			out := s.v[:i]
			s.v = s.v[i+1:]
			return out
		case c < 0x20 || c >= 0x7f || c == '\\':
			s.bad = true
			return ""
		}
	}
	s.bad = true
	return ""
}

func decodePlainRecord(v []byte) (Record, bool) {
	s := recordScanner{v: string(v)}
	var r Record
	s.lit(`{"type":"`)
	r.Type = s.str()
	s.lit(`,"id":"`)
	r.ID = s.str()
	s.lit(`,"location_id":"`)
	r.LocationID = s.str()
	s.lit(`,"owner":"`)
	r.Owner = s.str()
	s.lit(`,"followers":[`)
	r.Followers = make([]string, 0, 10)
	for !s.bad && len(s.v) > 0 && s.v[0] != ']' {
		if len(r.Followers) > 0 {
			s.lit(`,`)
		}
		s.lit(`"`)
		r.Followers = append(r.Followers, s.str())
	}
	s.lit(`]`)
	if !s.bad && len(s.v) > 1 && s.v[0] == ',' {
		s.lit(`,"contact_id":"`)
		r.ContactID = s.str()
	}
	s.lit(`}`)
	if s.bad || len(s.v) != 0 {
		return Record{}, false
	}
	return r, true
}
