package replication

import (
	"strings"
	"testing"
)

// TestDecodeEvent: an event read from a log position takes that position as
// its seq, and a seq of its own must equal it; without a position the event
// must carry its seq, as in an HTTP batch.
func TestDecodeEvent(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		pos     uint64
		wantSeq uint64
		err     string
	}{
		{"position fills a missing seq", `{"op":"user.delete","user_id":"u-1"}`, 7, 7, ""},
		{"a seq equal to the position", `{"seq":7,"op":"user.delete","user_id":"u-1"}`, 7, 7, ""},
		{"a seq other than the position", `{"seq":8,"op":"user.delete","user_id":"u-1"}`, 7, 0, "seq 8 does not match the position 7"},
		{"no position, a seq", `{"seq":3,"op":"user.delete","user_id":"u-1"}`, 0, 3, ""},
		{"no position, no seq", `{"op":"user.delete","user_id":"u-1"}`, 0, 0, "seq is missing"},
		{"still validated", `{"op":"user.delete"}`, 7, 0, "user_id is missing"},
		{"still strict", `{"op":"user.delete","user_id":"u-1","x":1}`, 7, 0, "unknown field"},
		{"a tx", `{"seq":3,"op":"user.delete","user_id":"u-1","tx":"0/16B3748"}`, 0, 3, ""},
		{"an empty tx", `{"seq":3,"op":"user.delete","user_id":"u-1","tx":""}`, 0, 0, "tx is empty"},
		{"a tx not a string", `{"seq":3,"op":"user.delete","user_id":"u-1","tx":7}`, 0, 0, "tx must be a string"},
		{"an overlong tx", `{"seq":3,"op":"user.delete","user_id":"u-1","tx":"` + strings.Repeat("x", MaxTxLen+1) + `"}`, 0, 0, "tx is longer"},
		{"trailing data", `{"op":"user.delete","user_id":"u-1"} {}`, 7, 0, "after the JSON value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeEvent([]byte(tc.raw), tc.pos)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || e.Seq != tc.wantSeq {
				t.Fatalf("DecodeEvent = %+v, %v; want seq %d", e, err, tc.wantSeq)
			}
		})
	}
}
