package natssource

import "testing"

// TestTxOfAsDecodeEventReadsIt: the tx that groups a batch is read as
// replication.DecodeEvent reads the event (internal/strictjson): spelt
// exactly, escapes decoded, once; "TX" is no tx (encoding/json matched it).
func TestTxOfAsDecodeEventReadsIt(t *testing.T) {
	for _, tc := range []struct{ data, tx, op string }{
		{`{"seq":1,"op":"user.delete","user_id":"u","tx":"t-1"}`, "t-1", "user.delete"},
		{`{"seq":1,"op":"user.delete","user_id":"u","t\u0078":"t-1"}`, "t-1", "user.delete"},
		{`{"seq":1,"op":"user.delete","user_id":"u","TX":"t-1"}`, "", "user.delete"},
		{`{"seq":1,"op":"user.delete","tx":"a","tx":"b"}`, "", "user.delete"},
		{`{"seq":1,"OP":"user.delete","user":{"tx":"inner"}}`, "", "unknown"},
		{`not json`, "", "unknown"},
	} {
		t.Run(tc.data, func(t *testing.T) {
			if got := txOf([]byte(tc.data)); got != tc.tx {
				t.Errorf("txOf = %q, want %q", got, tc.tx)
			}
			if got := opOf([]byte(tc.data)); got != tc.op {
				t.Errorf("opOf = %q, want %q", got, tc.op)
			}
		})
	}
}
