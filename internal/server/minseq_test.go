package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// minSeqReply is the part of a decision reply (or error) the test reads.
type minSeqReply struct {
	Allow      *bool   `json:"allow"`
	Reason     string  `json:"reason"`
	AppliedSeq *uint64 `json:"applied_seq"`
	Results    []struct {
		Allow  bool   `json:"allow"`
		Reason string `json:"reason"`
	} `json:"results"`
	Error *struct {
		Code       string  `json:"code"`
		Message    string  `json:"message"`
		AppliedSeq *uint64 `json:"applied_seq"`
	} `json:"error"`
}

func applyJSON(tb testing.TB, ts *testServer, events ...string) {
	tb.Helper()
	evs, err := ts.repl.DecodeBatch(strings.NewReader(`{"events":[` + strings.Join(events, ",") + `]}`))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := ts.repl.Apply(evs); err != nil {
		tb.Fatal(err)
	}
}

// followToggle is event seq of the toggle: u-2 stops following c-1 at even
// seqs and follows it again at odd ones (from seq 4 on; it follows at 3).
func followToggle(seq int) string {
	op := "follower.add"
	if seq%2 == 0 {
		op = "follower.remove"
	}
	return fmt.Sprintf(`{"seq":%d,"op":%q,"type":"contact","id":"c-1","user_id":"u-2"}`, seq, op)
}

// TestMinSeq: a decision with min_seq waits for the index to apply that seq,
// then answers from a state that includes it; when the seq does not come in
// --consistency-wait it is 503 index_behind with applied_seq, never an
// answer from the older state. The check that matters most: u-2 follows c-1
// until a follower.remove; asked with that remove's seq, a stale "allow" is
// what must never come back.
func TestMinSeq(t *testing.T) {
	ts := newTestServer(t, nil)
	applyJSON(t, ts,
		`{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["loc-1"],"assigned_data_only":true}}`,
		`{"seq":2,"op":"user.upsert","user":{"id":"u-2","role":"user","location_ids":["loc-1"],"assigned_data_only":true}}`,
		`{"seq":3,"op":"record.upsert","record":{"type":"contact","id":"c-1","location_id":"loc-1","owner":"u-1","followers":["u-2"]}}`)
	decision := func(minSeq int) string {
		return fmt.Sprintf(`{"subject":"u-2","action":"view","resource":{"type":"contact","id":"c-1"},"min_seq":%d}`, minSeq)
	}
	batch := func(minSeq int) string {
		return fmt.Sprintf(`{"subject":"u-2","checks":[{"action":"view","resource":{"type":"contact","id":"c-1"}}],"min_seq":%d}`, minSeq)
	}
	ask := func(tb testing.TB, path, body string) (int, minSeqReply) {
		rec := serve(ts.decision, http.MethodPost, path, body, nil)
		var r minSeqReply
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
			tb.Errorf("%s: not JSON: %s", path, rec.Body)
		}
		return rec.Code, r
	}

	t.Run("a seq never applied is 503 index_behind", func(t *testing.T) {
		ts.cfg.ConsistencyWait = 30 * time.Millisecond
		for _, tc := range []struct{ path, body string }{
			{"/v1/decision", decision(4)},
			{"/v1/decisions", batch(4)},
		} {
			code, r := ask(t, tc.path, tc.body)
			if code != 503 || r.Error == nil || r.Error.Code != "index_behind" || r.Error.AppliedSeq == nil || *r.Error.AppliedSeq != 3 || r.Allow != nil || r.Results != nil {
				t.Fatalf("%s: %d %+v, want 503 index_behind with applied_seq 3 and no answer", tc.path, code, r)
			}
		}
		// An applied seq answers at once.
		if code, r := ask(t, "/v1/decision", decision(3)); code != 200 || r.Allow == nil || !*r.Allow || *r.AppliedSeq != 3 {
			t.Fatalf("min_seq 3: %d %+v", code, r)
		}
	})

	t.Run("waits for the seq and never answers from before it", func(t *testing.T) {
		ts.cfg.ConsistencyWait = 5 * time.Second
		for seq := 4; seq <= 203; seq++ {
			path, body := "/v1/decision", decision(seq)
			if seq%3 == 0 {
				path, body = "/v1/decisions", batch(seq)
			}
			var (
				wg   sync.WaitGroup
				code int
				r    minSeqReply
			)
			wg.Add(1)
			go func() { // asks before the event is applied (usually): it waits
				defer wg.Done()
				code, r = ask(t, path, body)
			}()
			applyJSON(t, ts, followToggle(seq))
			wg.Wait()
			if code != 200 || r.AppliedSeq == nil {
				t.Fatalf("seq %d: %d %+v", seq, code, r)
			}
			applied := *r.AppliedSeq
			if applied < uint64(seq) {
				t.Fatalf("seq %d: answered at applied_seq %d, before the seq asked for", seq, applied)
			}
			allow := r.Allow != nil && *r.Allow
			if len(r.Results) == 1 {
				allow = r.Results[0].Allow
			}
			if want := applied%2 == 1; allow != want {
				t.Fatalf("seq %d: allow %v at applied_seq %d, want %v (u-2 follows c-1 at odd seqs)", seq, allow, applied, want)
			}
		}
	})
}
