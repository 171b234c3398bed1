package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// TestStrictKeys: a key given twice (encoding/json keeps the last) or spelt
// in another case (encoding/json matches any case) is refused in batches,
// single events and snapshot lines, with the key named, and nothing applied.
func TestStrictKeys(t *testing.T) {
	t.Run("batches", func(t *testing.T) {
		cases := []struct {
			name  string
			body  string
			index int    // of the invalid event; -1: the envelope is refused
			want  string // in the message
		}{
			{"user_id twice", `{"events":[{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["l"]}},{"seq":2,"op":"user.delete","user_id":"u-2","user_id":"u-1"}]}`,
				1, `the key "user_id" is given twice`},
			{"op twice", `{"events":[{"seq":1,"op":"record.delete","op":"user.delete","user_id":"u-1"}]}`, 0, `"op" is given twice`},
			{"key in upper case", `{"events":[{"seq":1,"op":"user.delete","USER_ID":"u-1"}]}`, 0, `the key "USER_ID" must be spelt "user_id"`},
			{"escaped key twice", `{"events":[{"seq":1,"op":"user.delete","user_id":"u-1","user_\u0069d":"u-2"}]}`, 0, `"user_id" is given twice`},
			{"nested key twice", `{"events":[{"seq":1,"op":"user.upsert","user":{"id":"u-1","id":"u-2","role":"user","location_ids":["l"]}}]}`,
				0, `the key "id" is given twice in user`},
			{"nested key in another case", `{"events":[{"seq":1,"op":"record.upsert","record":{"type":"contact","id":"c-1","location_id":"l","Owner":"u-1"}}]}`,
				0, `the key "Owner" in record must be spelt "owner"`},
			{"events twice", `{"events":[],"events":[{"seq":1,"op":"user.delete","user_id":"u-1"}]}`, -1, `the key "events" is given twice`},
			{"events in another case", `{"EVENTS":[{"seq":1,"op":"user.delete","user_id":"u-1"}]}`, -1, `"EVENTS" must be spelt "events"`},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r, _ := newReplicator(t)
				_, err := r.DecodeBatch(strings.NewReader(tc.body))
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one containing %q", err, tc.want)
				}
				var inv *InvalidEventError
				var se *strictjson.Error
				switch {
				case tc.index >= 0 && (!errors.As(err, &inv) || inv.Index != tc.index):
					t.Fatalf("err = %#v, want an *InvalidEventError at index %d", err, tc.index)
				case tc.index < 0 && (errors.As(err, &inv) || !errors.As(err, &se)):
					t.Fatalf("err = %#v, want a *strictjson.Error of the envelope", err)
				}
				if seq := r.ix.AppliedSeq(); seq != 0 {
					t.Fatalf("applied_seq %d after a refused batch", seq)
				}
			})
		}
	})
	t.Run("one event (a stream)", func(t *testing.T) {
		for _, raw := range []string{
			`{"seq":1,"op":"user.delete","user_id":"u-1","user_id":"u-2"}`,
			`{"Seq":1,"op":"user.delete","user_id":"u-1"}`,
		} {
			if _, err := DecodeEvent([]byte(raw), 1); err == nil || !strings.Contains(err.Error(), "the key") {
				t.Errorf("DecodeEvent(%s) = %v, want the key named", raw, err)
			}
		}
	})
	t.Run("snapshots", func(t *testing.T) {
		cases := []struct {
			name string
			body string
			line int
			want string
		}{
			{"seq twice", "{\"seq\":5,\"seq\":9}\n", 1, `"seq" is given twice`},
			{"seq in upper case", "{\"SEQ\":5}\n", 1, `"SEQ" must be spelt "seq"`},
			{"user id twice", "{\"seq\":5}\n{\"user\":{\"id\":\"u-1\",\"role\":\"user\",\"location_ids\":[],\"id\":\"u-2\"}}\n", 2, `"id" is given twice in user`},
			{"record in another case", "{\"seq\":5}\n\n{\"Record\":{\"type\":\"contact\",\"id\":\"c\",\"location_id\":\"l\"}}\n", 3, `"Record" must be spelt "record"`},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r, _ := newReplicator(t)
				mustApply(t, r, `{"events":[{"seq":1,"op":"user.delete","user_id":"u-0"}]}`)
				_, err := r.LoadSnapshot(strings.NewReader(tc.body))
				var le *SnapshotLineError
				if !errors.As(err, &le) || le.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want a *SnapshotLineError at line %d containing %q", err, tc.line, tc.want)
				}
				if seq := r.ix.AppliedSeq(); seq != 1 {
					t.Fatalf("applied_seq %d, want the old index's 1", seq)
				}
			})
		}
	})
}

// BenchmarkDecodeBatch1000 is DecodeBatch of 1000 events of four ops: the
// cost of the strict decode (encoding/json and the key check) per batch.
func BenchmarkDecodeBatch1000(b *testing.B) {
	r, _ := newReplicator(b)
	var sb strings.Builder
	sb.WriteString(`{"events":[`)
	for i := 0; i < 1000; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		seq := i + 1
		switch i % 4 {
		case 0:
			fmt.Fprintf(&sb, `{"seq":%d,"op":"record.upsert","record":{"type":"contact","id":"c-%d","location_id":"l","owner":"u-%d","followers":["u-1","u-2"]}}`, seq, seq, seq%100)
		case 1:
			fmt.Fprintf(&sb, `{"seq":%d,"op":"follower.add","type":"contact","id":"c-%d","user_id":"u-3"}`, seq, seq-1)
		case 2:
			fmt.Fprintf(&sb, `{"seq":%d,"op":"owner.set","type":"contact","id":"c-%d","user_id":"u-2"}`, seq, seq-2)
		case 3:
			fmt.Fprintf(&sb, `{"seq":%d,"op":"user.upsert","user":{"id":"u-%d","role":"user","location_ids":["l"]}}`, seq, seq%100)
		}
	}
	sb.WriteString(`]}`)
	body := sb.String()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.DecodeBatch(strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
