package regovalue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

const (
	benchUserJSON   = `{"id":"u-2","role":"user","location_ids":["loc-1","loc-2"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":false}`
	benchRecordJSON = `{"type":"contact","id":"c-42","location_id":"loc-1","owner":"u-1","followers":["u-2","u-3","u-4"]}`
)

func TestJSONToValue(t *testing.T) {
	docs := []string{
		benchUserJSON,
		benchRecordJSON,
		`{"type":"opportunity","id":"o-1","location_id":"loc-1","owner":"","followers":[],"contact_id":"c-1"}`,
		`{}`, `[]`, `""`, `"x"`, `true`, `false`, `null`, `0`, `-0`, `12`, `-12.5e3`, `1E-2`, `3.25`, `123456789012345678901234567890`,
		` { "a" : [ 1 , 2 , { "b" : null } ] , "c" : "d" } `,
		`{"esc":"a\"b\\c\/d\n\t\u00e9\ud83d\ude00","unicode":"é😀","empty":""}`,
		`{"nested":{"deeper":{"deepest":[[[]]]}}}`,
		`{"many":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13}`,
		`{"dup":1,"dup":2}`,
	}
	intern := NewInternTable()
	for _, doc := range docs {
		t.Run(doc, func(t *testing.T) {
			want, err := ast.ValueFromReader(bytes.NewReader([]byte(doc)))
			if err != nil {
				t.Fatal(err)
			}
			b := []byte(doc)
			got, err := Parse(b, intern)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			for i := range b { // the result must not refer to the input
				b[i] = 'X'
			}
			if got.Compare(want) != 0 {
				t.Errorf("Parse = %v, want %v", got, want)
			}
			if got.Hash() != want.Hash() {
				t.Errorf("hash differs")
			}
		})
	}
}

func TestJSONToValueErrors(t *testing.T) {
	for _, doc := range []string{
		``, ` `, `{`, `}`, `[`, `[1,]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{a:1}`, `"abc`, `"a\`, `"a\x"`,
		"\"a\nb\"", `tru`, `nul`, `falsy`, `01`, `-`, `1.`, `1e`, `.5`, `+1`, `{} {}`, `[1 2]`, `{"a":1 "b":2}`,
		string(bytes.Repeat([]byte("["), 100)) + string(bytes.Repeat([]byte("]"), 100)),
	} {
		t.Run(doc, func(t *testing.T) {
			if v, err := Parse([]byte(doc), nil); err == nil {
				t.Errorf("Parse(%q) = %v, want an error", doc, v)
			}
			if json.Valid([]byte(doc)) && len(doc) < 100 {
				t.Errorf("test case %q is valid JSON", doc)
			}
		})
	}
}

// BenchmarkConvertUser compares ways of turning a user's JSON into an ast.Value.
func BenchmarkConvertUser(b *testing.B) {
	benchConvert(b, []byte(benchUserJSON))
}

// BenchmarkConvertRecord is BenchmarkConvertUser for a record.
func BenchmarkConvertRecord(b *testing.B) {
	benchConvert(b, []byte(benchRecordJSON))
}

func benchConvert(b *testing.B, doc []byte) {
	b.Run("handparser", func(b *testing.B) {
		intern := NewInternTable()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(doc, intern); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal+InterfaceToValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(doc, &m); err != nil {
				b.Fatal(err)
			}
			if _, err := ast.InterfaceToValue(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ValueFromReader", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ast.ValueFromReader(bytes.NewReader(doc)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// ParseFact answers what Parse does, the top-level object as its pairs, built
// in the caller's buffers while they last (and in storage of its own past
// them); a document that is not an object is isObject false; invalid JSON is
// an error. It writes nothing in the buffers past what FactBuf.Used says.
func TestParseFact(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		object    bool
		lazy      []string // the fields that are StringArrays
	}{
		{"user", benchUserJSON, true, []string{"location_ids"}},
		{"record", benchRecordJSON, true, []string{"followers"}},
		{"empty object", `{}`, true, nil},
		{"more pairs and terms than the buffers", `{"k1":"a","k2":"b","k3":"c","k4":"d","k5":"e","k6":["f","g","h","i","j","k"]}`, true, []string{"k6"}},
		{"duplicate key", `{"dup":1,"dup":"x"}`, true, nil},
		{"nested", `{"a":{"b":{"c":[1,"x"]}}}`, true, nil},
		{"arrays", `{"s":["x","y\u00e9"],"e":[],"n":["x",1],"d":[["x"]],"o":{"in":["x"]}}`, true, []string{"s", "e"}},
		{"many strings", `{"a":["1","2","3","4","5"],"b":["6","7","8","9"],"c":["10"],"d":["11","12"]}`, true, []string{"a", "b", "c", "d"}},
		{"array", `["a"]`, false, nil},
		{"string", `"a"`, false, nil},
		{"null", `null`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var terms [4]ast.Term
			var pairBuf [3][2]*ast.Term
			var arrays [2]StringArray
			var strs [6]string
			var boxes [3]ast.String
			b := []byte(tc.doc)
			buf := FactBuf{Terms: terms[:], Pairs: pairBuf[:0], Arrays: arrays[:0], Strings: strs[:0], Boxes: boxes[:]}
			pairs, isObject, err := ParseFact(b, NewInternTable(), &buf)
			if err != nil {
				t.Fatal(err)
			}
			u := buf.Used
			if slices.ContainsFunc(terms[u.Terms:], func(t ast.Term) bool { return t.Value != nil }) ||
				slices.ContainsFunc(arrays[u.Arrays:], func(a StringArray) bool { return a.Len() > 0 }) ||
				slices.ContainsFunc(strs[u.Strings:], func(s string) bool { return s != "" }) ||
				slices.ContainsFunc(boxes[u.Boxes:], func(s ast.String) bool { return s != "" }) {
				t.Errorf("written past Used %+v: %v %v %v %v", u, terms, arrays, strs, boxes)
			}
			if isObject != tc.object {
				t.Fatalf("isObject = %v, want %v", isObject, tc.object)
			}
			if !isObject {
				if pairs != nil {
					t.Errorf("pairs = %v for a non-object", pairs)
				}
				return
			}
			for i := range b { // the result must not refer to the input
				b[i] = 'X'
			}
			want, err := ast.ValueFromReader(bytes.NewReader([]byte(tc.doc)))
			if err != nil {
				t.Fatal(err)
			}
			built := make([][2]*ast.Term, len(pairs))
			for i, kv := range pairs {
				built[i] = kv
				sa, lazy := kv[1].Value.(*StringArray)
				if wantLazy := slices.Contains(tc.lazy, string(kv[0].Value.(ast.String))); lazy != wantLazy {
					t.Errorf("field %v: a StringArray: %v, want %v", kv[0], lazy, wantLazy)
				}
				if lazy {
					built[i][1] = sa.Materialize()
				}
			}
			if got := ast.NewObject(built...); got.Compare(want) != 0 {
				t.Errorf("pairs make %v, want %v", got, want)
			}
			if len(pairs) > 0 && len(pairs) <= len(pairBuf) && &pairs[0] != &pairBuf[0] {
				t.Error("the pairs are not in the caller's buffer")
			}
			used := false
			for i := range terms {
				used = used || terms[i].Value != nil
			}
			if strings.Contains(tc.doc, `"a"`) && !used {
				t.Error("no term of the caller's buffer was used")
			}
		})
	}
	for _, doc := range []string{``, `{`, `{"a":1,}`, `{"a":1} x`, `[1,]`} {
		t.Run("invalid "+doc, func(t *testing.T) {
			if pairs, ok, err := ParseFact([]byte(doc), nil, &FactBuf{}); err == nil {
				t.Errorf("ParseFact(%q) = %v, %v, want an error", doc, pairs, ok)
			}
		})
	}
}

// The intern table answers every string added with its one shared term, and
// nil for any other, past its slots too.
func TestInternTable(t *testing.T) {
	tab := NewInternTable()
	// two long strings: the second is past the bytes the slots hold
	added := []string{strings.Repeat("x", 40000), strings.Repeat("y", 40000)}
	for i := range 3 * internSlots {
		added = append(added, fmt.Sprintf("s-%d", i))
	}
	added = append(added, "", "id", "user", "location_ids", "add_follower", "é")
	for _, s := range added {
		tab.Add(s)
	}
	for _, s := range added {
		got := tab.Get(s)
		if got == nil || got.Value.(ast.String) != ast.String(s) {
			t.Fatalf("Get(%q) = %v", s, got)
		}
		if tab.Get(s) != got {
			t.Fatalf("Get(%q) is not one shared term", s)
		}
	}
	for _, s := range []string{"s-", "s-999", "ids", "di", "users", "ID", "e"} {
		if got := tab.Get(s); got != nil {
			t.Errorf("Get(%q) = %v, want nil", s, got)
		}
	}
	var none *InternTable
	if none.Get("id") != nil {
		t.Error("a nil table has terms")
	}
}
