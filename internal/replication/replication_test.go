package replication

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

func newReplicator(t testing.TB) (*Replicator, *index.Index) {
	t.Helper()
	ix, err := index.Open(index.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	r, err := New(Config{Index: ix})
	if err != nil {
		t.Fatal(err)
	}
	return r, ix
}

func mustApply(t testing.TB, r *Replicator, body string) Result {
	t.Helper()
	events, err := r.DecodeBatch(strings.NewReader(body))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	res, err := r.Apply(events)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		event   string
		wantErr string // "" = valid
	}{
		{"user.upsert", `{"seq":1,"op":"user.upsert","user":{"id":"u","role":"user","location_ids":["l"]}}`, ""},
		{"user.upsert admin", `{"seq":1,"op":"user.upsert","user":{"id":"u","role":"admin","location_ids":[]}}`, ""},
		{"user.upsert bad role", `{"seq":1,"op":"user.upsert","user":{"id":"u","role":"root","location_ids":[]}}`, "role must be"},
		{"user.upsert no role", `{"seq":1,"op":"user.upsert","user":{"id":"u","location_ids":[]}}`, "role is missing"},
		{"user.upsert no locations", `{"seq":1,"op":"user.upsert","user":{"id":"u","role":"user"}}`, "location_ids is missing"},
		{"user.upsert empty location", `{"seq":1,"op":"user.upsert","user":{"id":"u","role":"user","location_ids":[""]}}`, "location_ids[0] is empty"},
		{"user.upsert no user", `{"seq":1,"op":"user.upsert"}`, "user is missing"},
		{"user.upsert empty id", `{"seq":1,"op":"user.upsert","user":{"id":"","role":"user","location_ids":[]}}`, "user.id is missing"},
		{"record.upsert", `{"seq":1,"op":"record.upsert","record":{"type":"contact","id":"c","location_id":"l"}}`, ""},
		{"record.upsert opportunity with contact", `{"seq":1,"op":"record.upsert","record":{"type":"opportunity","id":"o","location_id":"l","contact_id":"c"}}`, ""},
		{"record.upsert contact with contact_id", `{"seq":1,"op":"record.upsert","record":{"type":"contact","id":"c","location_id":"l","contact_id":"c2"}}`, "only for opportunities"},
		{"record.upsert bad type", `{"seq":1,"op":"record.upsert","record":{"type":"lead","id":"c","location_id":"l"}}`, "type must be"},
		{"record.upsert no location", `{"seq":1,"op":"record.upsert","record":{"type":"contact","id":"c"}}`, "location_id is missing"},
		{"record.upsert empty follower", `{"seq":1,"op":"record.upsert","record":{"type":"contact","id":"c","location_id":"l","followers":[""]}}`, "followers[0] is empty"},
		{"follower.add", `{"seq":1,"op":"follower.add","type":"contact","id":"c","user_id":"u"}`, ""},
		{"follower.add no user", `{"seq":1,"op":"follower.add","type":"contact","id":"c"}`, "user_id is missing"},
		{"follower.add empty user", `{"seq":1,"op":"follower.add","type":"contact","id":"c","user_id":""}`, "user_id is empty"},
		{"follower.remove no id", `{"seq":1,"op":"follower.remove","type":"contact","user_id":"u"}`, "id is missing"},
		{"owner.set unassign", `{"seq":1,"op":"owner.set","type":"opportunity","id":"o","user_id":""}`, ""},
		{"owner.set no user_id", `{"seq":1,"op":"owner.set","type":"opportunity","id":"o"}`, "user_id is missing"},
		{"record.delete", `{"seq":1,"op":"record.delete","type":"contact","id":"c"}`, ""},
		{"record.delete with user_id", `{"seq":1,"op":"record.delete","type":"contact","id":"c","user_id":"u"}`, `does not take the field "user_id"`},
		{"user.delete", `{"seq":1,"op":"user.delete","user_id":"u"}`, ""},
		{"user.delete with record", `{"seq":1,"op":"user.delete","user_id":"u","record":{"type":"contact"}}`, `does not take the field "record"`},
		{"user.delete no user_id", `{"seq":1,"op":"user.delete"}`, "user_id is missing"},
		{"no seq", `{"op":"user.delete","user_id":"u"}`, "seq is missing"},
		{"no op", `{"seq":1}`, "op is missing"},
		{"unknown op", `{"seq":1,"op":"user.rename"}`, `unknown op "user.rename"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			if err := strictjson.Unmarshal([]byte(tc.event), &e); err != nil {
				t.Fatalf("decode: %v", err)
			}
			err := e.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	r, _ := newReplicator(t)
	cases := []struct {
		name string
		body string
		want any // pointer to the error type wanted, or the strictjson kind
		idx  int
	}{
		{"malformed", `{"events": [`, strictjson.ErrSyntax, 0},
		{"not an object", `[1,2]`, strictjson.ErrType, 0},
		{"no events", `{}`, new(*MalformedError), 0},
		{"unknown top field", `{"events": [], "x": 1}`, strictjson.ErrUnknownField, 0},
		{"trailing", `{"events": []}{}`, strictjson.ErrTrailingData, 0},
		{"not UTF-8 in an event", "{\"events\": [{\"seq\":1,\"op\":\"user.delete\",\"user_id\":\"u\"},{\"seq\":2,\"op\":\"user.delete\",\"user_id\":\"u\xff\"}]}", new(*InvalidEventError), 1},
		{"unknown event field", `{"events": [{"seq":1,"op":"user.delete","user_id":"u"},{"seq":2,"op":"user.delete","user_id":"u","x":1}]}`, new(*InvalidEventError), 1},
		{"mistyped seq", `{"events": [{"seq":-1,"op":"user.delete","user_id":"u"}]}`, new(*InvalidEventError), 0},
		{"invalid event", `{"events": [{"seq":1,"op":"nope"}]}`, new(*InvalidEventError), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.DecodeBatch(strings.NewReader(tc.body))
			if kind, ok := tc.want.(error); ok {
				if !errors.Is(err, kind) {
					t.Fatalf("error %T %v, want %v", err, err, kind)
				}
			} else if err == nil || !errors.As(err, tc.want) {
				t.Fatalf("error %T %v, want %T", err, err, tc.want)
			}
			var inv *InvalidEventError
			if errors.As(err, &inv) && inv.Index != tc.idx {
				t.Fatalf("index %d, want %d", inv.Index, tc.idx)
			}
		})
	}
	t.Run("too many events", func(t *testing.T) {
		r2, err := New(Config{Index: r.ix, MaxEvents: 2})
		if err != nil {
			t.Fatal(err)
		}
		_, err = r2.DecodeBatch(strings.NewReader(`{"events": [{"seq":1,"op":"user.delete","user_id":"u"},{"seq":2,"op":"user.delete","user_id":"u"},{"seq":3,"op":"user.delete","user_id":"u"}]}`))
		if !errors.Is(err, ErrTooManyEvents) {
			t.Fatalf("error %v, want ErrTooManyEvents", err)
		}
	})
}

func TestApplySemantics(t *testing.T) {
	r, ix := newReplicator(t)
	res := mustApply(t, r, `{"events": [
	  {"seq": 1, "op": "user.upsert", "user": {"id": "u-1", "role": "user", "location_ids": ["loc-1"], "assigned_data_only": true}},
	  {"seq": 2, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "loc-1", "owner": "u-1", "followers": ["u-2", "u-1", "u-2"]}},
	  {"seq": 3, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"},
	  {"seq": 4, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"},
	  {"seq": 5, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-1"},
	  {"seq": 6, "op": "follower.remove", "type": "contact", "id": "c-1", "user_id": "u-9"},
	  {"seq": 7, "op": "owner.set", "type": "contact", "id": "c-1", "user_id": "u-2"},
	  {"seq": 8, "op": "record.delete", "type": "opportunity", "id": "nope"},
	  {"seq": 9, "op": "user.delete", "user_id": "nobody"}
	]}`)
	if res.AppliedSeq != 9 || res.Applied != 9 || res.Skipped != 0 || res.PerOp[OpFollowerAdd].Applied != 3 {
		t.Fatalf("result %+v", res)
	}
	var rec index.Record
	var u index.User
	var ok bool
	if err := ix.View(func(tx *index.ReadTx) error {
		var err error
		if rec, ok, err = tx.Record("contact", "c-1"); err != nil {
			return err
		}
		u, _, err = tx.User("u-1")
		return err
	}); err != nil || !ok {
		t.Fatalf("read: %v %v", ok, err)
	}
	if rec.Owner != "u-2" || fmt.Sprint(rec.Followers) != "[u-3]" {
		t.Fatalf("record %+v: want owner u-2 (taken from the followers) and followers [u-3]", rec)
	}
	if !u.ContactsEnabled || !u.OpportunitiesEnabled || !u.AssignedDataOnly {
		t.Fatalf("user defaults not applied: %+v", u)
	}

	// user.delete unassigns and unfollows.
	mustApply(t, r, `{"events": [{"seq": 10, "op": "user.delete", "user_id": "u-2"}, {"seq": 11, "op": "user.delete", "user_id": "u-3"}]}`)
	_ = ix.View(func(tx *index.ReadTx) error { rec, _, _ = tx.Record("contact", "c-1"); return nil })
	if rec.Owner != "" || len(rec.Followers) != 0 {
		t.Fatalf("after user.delete: %+v", rec)
	}
}

func TestApplyRejectsAndLeavesIndex(t *testing.T) {
	r, ix := newReplicator(t)
	mustApply(t, r, `{"events": [
	  {"seq": 1, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "l", "owner": "o", "followers": ["1","2","3","4","5","6","7","8","9"]}}]}`)
	cases := []struct {
		name string
		body string
		want any
		idx  int
	}{
		{"gap", `{"events": [{"seq": 3, "op": "user.delete", "user_id": "u"}]}`, new(*GapError), 0},
		{"not consecutive", `{"events": [{"seq": 2, "op": "user.delete", "user_id": "u"}, {"seq": 4, "op": "user.delete", "user_id": "u"}]}`, new(*GapError), 0},
		{"old after new", `{"events": [{"seq": 2, "op": "user.delete", "user_id": "u"}, {"seq": 1, "op": "user.delete", "user_id": "u"}]}`, new(*GapError), 0},
		{"11th follower by add", `{"events": [{"seq": 2, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "10"}, {"seq": 3, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "11"}]}`, new(*InvalidEventError), 1},
		{"add on missing record", `{"events": [{"seq": 2, "op": "record.delete", "type": "contact", "id": "c-1"}, {"seq": 3, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "x"}]}`, new(*InvalidEventError), 1},
		{"remove on missing record", `{"events": [{"seq": 2, "op": "follower.remove", "type": "opportunity", "id": "c-1", "user_id": "x"}]}`, new(*InvalidEventError), 0},
		{"owner.set on missing record", `{"events": [{"seq": 2, "op": "owner.set", "type": "contact", "id": "zz", "user_id": "x"}]}`, new(*InvalidEventError), 0},
		{"NUL in id", `{"events": [{"seq": 2, "op": "user.upsert", "user": {"id": "a\u0000b", "role": "user", "location_ids": []}}]}`, new(*InvalidEventError), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := dump(t, r)
			events, err := r.DecodeBatch(strings.NewReader(tc.body))
			if err == nil {
				_, err = r.Apply(events)
			}
			if err == nil || !errors.As(err, tc.want) {
				t.Fatalf("error %T %v, want %T", err, err, tc.want)
			}
			var inv *InvalidEventError
			if errors.As(err, &inv) && inv.Index != tc.idx {
				t.Fatalf("index %d, want %d", inv.Index, tc.idx)
			}
			var gap *GapError
			if errors.As(err, &gap) && gap.AppliedSeq != 1 {
				t.Fatalf("gap applied_seq %d, want 1", gap.AppliedSeq)
			}
			if after := dump(t, r); after != before || ix.AppliedSeq() != 1 {
				t.Fatalf("the index changed:\n%s\n->\n%s", before, after)
			}
		})
	}
}

// dump is the whole index as snapshot NDJSON.
func dump(t testing.TB, r *Replicator) string {
	t.Helper()
	var b strings.Builder
	if err := r.WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestSnapshotRoundTripAndErrors(t *testing.T) {
	r, ix := newReplicator(t)
	in := `{"seq": 7}

{"user": {"id": "u-1", "role": "admin", "location_ids": ["l1", "l2"]}}
{"record": {"type": "opportunity", "id": "o-1", "location_id": "l1", "owner": "u-1", "followers": ["u-2", "u-1"], "contact_id": "c-1"}}
{"record": {"type": "contact", "id": "c-1", "location_id": "l1"}}
`
	res, err := r.LoadSnapshot(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if res.AppliedSeq != 7 || res.Users != 1 || res.Records != 2 || ix.AppliedSeq() != 7 {
		t.Fatalf("result %+v", res)
	}
	out := dump(t, r)
	want := `{"seq":7}
{"user":{"id":"u-1","role":"admin","location_ids":["l1","l2"],"assigned_data_only":false,"contacts_enabled":true,"opportunities_enabled":true}}
{"record":{"type":"contact","id":"c-1","location_id":"l1","owner":"","followers":[]}}
{"record":{"type":"opportunity","id":"o-1","location_id":"l1","owner":"u-1","followers":["u-2"],"contact_id":"c-1"}}
`
	if out != want {
		t.Fatalf("export:\n%s\nwant:\n%s", out, want)
	}
	// The export loads back to the same index.
	r2, _ := newReplicator(t)
	if _, err := r2.LoadSnapshot(strings.NewReader(out)); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, r2); got != out {
		t.Fatalf("re-import differs:\n%s", got)
	}

	bad := []struct {
		name string
		body string
		line int
	}{
		{"empty", "", 1},
		{"blank only", "\n\n", 1},
		{"header not seq", `{"user": {}}` + "\n", 1},
		{"header unknown field", `{"seq": 1, "x": 2}` + "\n", 1},
		{"both kinds", "{\"seq\":1}\n{\"user\":{\"id\":\"u\",\"role\":\"user\",\"location_ids\":[]},\"record\":{\"type\":\"contact\",\"id\":\"c\",\"location_id\":\"l\"}}\n", 2},
		{"neither", "{\"seq\":1}\n{}\n", 2},
		{"bad user on line 4", "{\"seq\":1}\n{\"user\":{\"id\":\"u\",\"role\":\"user\",\"location_ids\":[]}}\n\n{\"user\":{\"id\":\"v\",\"role\":\"user\"}}\n", 4},
		{"malformed", "{\"seq\":1}\n{\"user\":\n", 2},
		{"too long", "{\"seq\":1}\n{\"user\":{\"id\":\"" + strings.Repeat("x", 2<<20) + "\"}}\n", 2},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.LoadSnapshot(strings.NewReader(tc.body))
			var le *SnapshotLineError
			if !errors.As(err, &le) || le.Line != tc.line {
				t.Fatalf("error %v, want a line error at line %d", err, tc.line)
			}
			if got := dump(t, r); got != want {
				t.Fatalf("the index changed")
			}
		})
	}
}

// TestSnapshotStreamsWithFlatMemory loads 200,000 records (about 30 MB of
// NDJSON) and checks that the heap stays far below the input's size while
// decisions-style reads go on and see the old index or the new one.
func TestSnapshotStreamsWithFlatMemory(t *testing.T) {
	r, ix := newReplicator(t)
	if _, err := r.LoadSnapshot(strings.NewReader("{\"seq\": 1}\n{\"user\":{\"id\":\"u-2\",\"role\":\"admin\",\"location_ids\":[]}}\n")); err != nil {
		t.Fatal(err)
	}
	const n = 200_000
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // heap sampler
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	var torn atomic.Int64
	go func() { // readers: the old index (seq 1, u-2 admin) or the new one (seq n, u-2 a user)
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = ix.View(func(tx *index.ReadTx) error {
				u, ok, err := tx.User("u-2")
				if err != nil || !ok {
					torn.Add(1)
					return nil
				}
				seq := tx.AppliedSeq()
				if (seq == 1) != (u.Role == "admin") {
					torn.Add(1)
				}
				return nil
			})
		}
	}()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(dataset.New(dataset.Config{Records: n, Users: 10_000}).WriteSnapshot(pw, n)) }()
	res, err := r.LoadSnapshot(pr)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if c := ix.Counts(); res.Records != n || ix.AppliedSeq() != n || c.Records["contact"]+c.Records["opportunity"] != n {
		t.Fatalf("result %+v, counts %+v", res, ix.Counts())
	}
	if torn.Load() != 0 {
		t.Fatalf("%d reads saw a mix of the old and new index", torn.Load())
	}
	const limit = 96 << 20
	t.Logf("peak heap in use while loading %d records: %d MiB", n, peak.Load()>>20)
	if peak.Load() > limit {
		t.Fatalf("peak heap %d MiB while streaming a snapshot: memory grows with the input", peak.Load()>>20)
	}
}

func BenchmarkApply1000(b *testing.B) {
	r, _ := newReplicator(b)
	var seq int
	batch := func() []Event {
		var sb strings.Builder
		sb.WriteString(`{"events":[`)
		for i := 0; i < 1000; i++ {
			seq++
			if i > 0 {
				sb.WriteByte(',')
			}
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
		ev, err := r.DecodeBatch(strings.NewReader(sb.String()))
		if err != nil {
			b.Fatal(err)
		}
		return ev
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ev := batch()
		b.StartTimer()
		if _, err := r.Apply(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "events/s")
}
