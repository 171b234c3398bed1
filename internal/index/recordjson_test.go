package index

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestRecordJSONMatchesEncodingJSON: the hand-written record codec writes the bytes encoding/json
// writes, and reads what encoding/json reads, plain ids or not.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	recs := []struct {
		name string
		r    Record
	}{
		{"plain", Record{Type: "contact", ID: "r-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{"u-2", "u-3"}}},
		{"no followers", Record{Type: "contact", ID: "r-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{}}},
		{"nil followers", Record{Type: "contact", ID: "r-1", LocationID: "loc-1"}},
		{"unassigned", Record{Type: "contact", ID: "r-1", LocationID: "loc-1", Followers: []string{"u-2"}}},
		{"contact id", Record{Type: "opportunity", ID: "o-1", LocationID: "l", Owner: "u", Followers: []string{"f"}, ContactID: "c-9"}},
		{"quote", Record{Type: "contact", ID: `r"1`, LocationID: "loc-1", Owner: "u-1", Followers: []string{}}},
		{"backslash", Record{Type: "contact", ID: `r\1`, LocationID: "loc-1", Owner: "u-1", Followers: []string{`a\b`}}},
		{"html", Record{Type: "contact", ID: "r<1>&", LocationID: "loc-1", Owner: "u&1", Followers: []string{"<f>"}}},
		{"control", Record{Type: "contact", ID: "r\t1\n", LocationID: "loc\x01", Owner: "u-1", Followers: []string{"\x7f"}}},
		{"unicode", Record{Type: "contact", ID: "é—\u2028", LocationID: "loc-1", Owner: "ü", Followers: []string{"日本"}}},
		{"invalid utf-8", Record{Type: "contact", ID: "r\xff", LocationID: "loc-1", Owner: "u-1", Followers: []string{}}},
		{"comma in ids", Record{Type: "contact", ID: `r,"x":`, LocationID: `],"a"`, Owner: "}", Followers: []string{`,`, `"]`}}},
	}
	for _, tc := range recs {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(&tc.r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendRecordJSON([]byte("x"), &tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], want) || got[0] != 'x' {
				t.Fatalf("appendRecordJSON = %s, encoding/json %s", got, want)
			}
			var std Record
			if err := json.Unmarshal(want, &std); err != nil {
				t.Fatal(err)
			}
			if std.Followers == nil {
				std.Followers = []string{}
			}
			dec, err := decodeRecord(want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dec, std) {
				t.Fatalf("decodeRecord(%s) = %#v, encoding/json %#v", want, dec, std)
			}
		})
	}
}

// TestDecodeRecordOtherShapes: stored JSON the fast path does not expect (other key order, white
// space, escapes, unknown keys) still decodes as encoding/json decodes it; broken JSON is an error.
func TestDecodeRecordOtherShapes(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Record
		bad      bool
	}{
		{name: "order", in: `{"id":"r","type":"contact","owner":"u","location_id":"l","followers":["f"]}`,
			want: Record{Type: "contact", ID: "r", LocationID: "l", Owner: "u", Followers: []string{"f"}}},
		{name: "spaces", in: `{ "type": "contact", "id": "r", "location_id": "l", "owner": "", "followers": [ ] }`,
			want: Record{Type: "contact", ID: "r", LocationID: "l", Followers: []string{}}},
		{name: "escape", in: `{"type":"contact","id":"r\u0041","location_id":"l","owner":"u","followers":[]}`,
			want: Record{Type: "contact", ID: "rA", LocationID: "l", Owner: "u", Followers: []string{}}},
		{name: "null followers", in: `{"type":"contact","id":"r","location_id":"l","owner":"u","followers":null}`,
			want: Record{Type: "contact", ID: "r", LocationID: "l", Owner: "u", Followers: []string{}}},
		{name: "extra key", in: `{"type":"contact","id":"r","location_id":"l","owner":"u","followers":[],"x":1}`,
			want: Record{Type: "contact", ID: "r", LocationID: "l", Owner: "u", Followers: []string{}}},
		{name: "truncated", in: `{"type":"contact","id":"r","location_id":"l","owner":"u","followers":["f"`, bad: true},
		{name: "trailing", in: `{"type":"contact","id":"r","location_id":"l","owner":"u","followers":[]}}`, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRecord([]byte(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("decodeRecord(%s) = %#v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decodeRecord(%s) = %#v, %v; want %#v", tc.in, got, err, tc.want)
			}
		})
	}
}

// BenchmarkRecordCodec is the decode and re-encode each replication event does to its record:
// the hand-written codec against encoding/json.
func BenchmarkRecordCodec(b *testing.B) {
	r := Record{Type: TypeContact, ID: "r-00012345", LocationID: "loc-3", Owner: "u-4711",
		Followers: []string{"u-1", "u-22", "u-333", "u-4444", "u-5555"}}
	v, err := json.Marshal(&r)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			got, err := decodeRecord(v)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := appendRecordJSON(nil, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var got Record
			if err := json.Unmarshal(v, &got); err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(&got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRecordJSONOneAllocation: a plain record is encoded into one allocation of its size
// (the write path stores one per replication event).
func TestRecordJSONOneAllocation(t *testing.T) {
	for _, r := range []Record{
		{Type: "contact", ID: "r-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{"u-2", "u-3"}},
		{Type: "contact", ID: "r-1", LocationID: "loc-1", Followers: []string{}},
		{Type: "opportunity", ID: "o-1", LocationID: "l", Owner: "u", Followers: []string{"f"}, ContactID: "c-9"},
	} {
		v, err := appendRecordJSON(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		if raceBuild {
			continue
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = appendRecordJSON(nil, &r) }); n != 1 {
			t.Errorf("%s: %.0f allocations, want 1", v, n)
		}
	}
}
