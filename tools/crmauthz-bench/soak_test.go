package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// TestSoakFlags: flags out of range are refused before anything starts
// (no binary is built or started: --crmauthz is not given).
func TestSoakFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no rate", []string{"--rate", "0"}, "--rate"},
		{"window under 1s", []string{"--window", "500ms", "--duration", "1s"}, "--window"},
		{"duration not whole windows", []string{"--window", "30s", "--duration", "45s"}, "--duration"},
		{"duration under a window", []string{"--window", "30s", "--duration", "10s"}, "--duration"},
		{"negative warm-up", []string{"--warmup", "-1s"}, "--warmup"},
		{"negative events rate", []string{"--events-rate", "-1"}, "--events-rate"},
		{"empty batch", []string{"--batch", "0"}, "--batch"},
		{"batch over the server's limit", []string{"--batch", "10001"}, "--batch"},
		{"new share over 1", []string{"--new-share", "1.5"}, "--new-share"},
		{"a batch less often than a window", []string{"--batch", "1000", "--events-rate", "10", "--window", "30s"}, "--batch"},
		{"batches more often than 1ms", []string{"--batch", "1", "--events-rate", "5000"}, "--batch"},
		{"no records", []string{"--records", "0"}, "--records"},
		{"index without index.db", []string{"--index", "/nonexistent"}, "--index"},
		{"stray argument", []string{"--rate", "10", "now"}, "unexpected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := mainErr(append([]string{"soak"}, tc.args...), &out, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("soak %v: %v, want an error about %s", tc.args, err, tc.want)
			}
		})
	}
	ok := soakConfig{run: runConfig{Records: 10, Users: 60, Locations: 5}, Duration: time.Minute, Window: 30 * time.Second,
		Rate: 1000, EventsRate: 1000, Batch: 100, NewShare: 0.5}
	if err := ok.check(); err != nil {
		t.Errorf("the defaults refused: %v", err)
	}
	if ok.batchEvery() != 100*time.Millisecond {
		t.Errorf("100 events at 1000/s: a batch every %s, want 100ms", ok.batchEvery())
	}
	ok.EventsRate = 0 // decisions alone
	if err := ok.check(); err != nil || ok.batchEvery() != 0 {
		t.Errorf("--events-rate 0: %v, a batch every %s; want accepted, no batches", err, ok.batchEvery())
	}
}

// TestSoakHelp: soak -h describes the command and its flags.
func TestSoakHelp(t *testing.T) {
	var out bytes.Buffer
	_ = mainErr([]string{"soak", "-h"}, &out, &out)
	for _, want := range []string{"usage: crmauthz-bench soak", "--crmauthz-args", "-events-rate", "-index DIR", "-window"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("soak -h lacks %q:\n%s", want, out.String())
		}
	}
}

// TestSoakEvents: every event the soak posts is valid and changes the
// index, however often a record is changed: applied in order to the
// reference model (internal/refmodel) of the loaded world, none is refused
// (no 11th follower, no follower.remove of an absent one) and each changes
// the model; the sequence numbers are consecutive, the new records are the
// world's records from Records on, every op of the mix occurs, and a seed
// gives the same events again.
func TestSoakEvents(t *testing.T) {
	// A small world, so that each record is changed many times.
	w := dataset.New(dataset.Config{Records: 40, Users: 60, Locations: 5})
	var snap bytes.Buffer
	if err := w.WriteSnapshot(&snap, 7); err != nil {
		t.Fatal(err)
	}
	_, m, err := refmodel.ReadSnapshot(&snap)
	if err != nil {
		t.Fatal(err)
	}
	gen := newSoakEvents(w, 0.2, 3)
	seq := uint64(8)
	ops := map[string]int{}
	nextNew := 40
	var bodies []byte
	for b := range 60 {
		body := gen.batch(nil, seq, 50)
		bodies = append(bodies, body...)
		var batch struct{ Events []refmodel.Event }
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&batch); err != nil || len(batch.Events) != 50 {
			t.Fatalf("batch %d: %v, %d events: %s", b, err, len(batch.Events), body)
		}
		for _, e := range batch.Events {
			if e.Seq != seq {
				t.Fatalf("batch %d: seq %d, want %d", b, e.Seq, seq)
			}
			seq++
			ops[e.Op]++
			if e.Op == refmodel.OpRecordUpsert {
				if want := w.RecordAt(nextNew); e.Record == nil || e.Record.ID != want.ID {
					t.Errorf("seq %d upserts %+v, want the world's record %d (%s)", e.Seq, e.Record, nextNew, want.ID)
				}
				nextNew++
			}
			key := refmodel.Key{Type: e.Type, ID: e.ID}
			if e.Record != nil {
				key = refmodel.Key{Type: e.Record.Type, ID: e.Record.ID}
			}
			before, existed := m.Records[key]
			if err := m.Apply(e); err != nil {
				t.Fatalf("seq %d %s %s: %v", e.Seq, e.Op, key, err)
			}
			if after := m.Records[key]; existed && after.Owner == before.Owner && slices.Equal(after.Followers, before.Followers) {
				t.Errorf("seq %d %s %s changed nothing", e.Seq, e.Op, key)
			}
		}
	}
	for _, op := range []string{refmodel.OpRecordUpsert, refmodel.OpOwnerSet, refmodel.OpFollowerAdd, refmodel.OpFollowerRemove} {
		if ops[op] < 300 {
			t.Errorf("%d %s events of 3,000, want a share of the mix (%v)", ops[op], op, ops)
		}
	}
	full := 0
	for _, r := range m.Records {
		if len(r.Followers) == refmodel.DefaultMaxFollowers {
			full++
		}
	}
	if full == 0 {
		t.Errorf("no record reached %d followers: the limit was never tried", refmodel.DefaultMaxFollowers)
	}
	again := newSoakEvents(w, 0.2, 3)
	var same []byte
	for b := range 60 {
		same = append(same, again.batch(nil, 8+uint64(b)*50, 50)...)
	}
	if !bytes.Equal(same, bodies) {
		t.Errorf("seed 3 gave other events the second time")
	}
}

// fakeAdmin is a replication endpoint that checks the batches' sequence
// numbers and refuses the batch after the first `accept` with a 409.
type fakeAdmin struct {
	mu      sync.Mutex
	applied uint64
	batches int
	accept  int
	bad     string
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/v1/replication/status":
		fmt.Fprintf(w, `{"applied_seq":%d}`, f.applied)
	case "/v1/replication/events":
		var batch struct{ Events []refmodel.Event }
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &batch); err != nil || len(batch.Events) == 0 {
			f.bad = fmt.Sprintf("%v: %s", err, body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if batch.Events[0].Seq != f.applied+1 || f.batches == f.accept {
			w.WriteHeader(http.StatusConflict)
			fmt.Fprintf(w, `{"error":{"code":"sequence_gap"},"applied_seq":%d}`, f.applied)
			return
		}
		f.applied = batch.Events[len(batch.Events)-1].Seq
		f.batches++
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// TestReplicator: the soak's replication continues from the server's
// applied_seq, counts what was applied, and stops at the first batch the
// server refuses, saying why.
func TestReplicator(t *testing.T) {
	admin := &fakeAdmin{applied: 41, accept: 5}
	srv := httptest.NewServer(admin)
	defer srv.Close()
	w := dataset.New(dataset.Config{Records: 100, Users: 60, Locations: 5})
	r := newReplicator(srv.URL, newSoakEvents(w, 0.5, 1), 20, time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r.run(ctx) // returns at the refused batch
	if ctx.Err() != nil {
		t.Fatal("the replication did not stop at the refused batch")
	}
	st := r.stats()
	applied, lat := r.take()
	admin.mu.Lock()
	defer admin.mu.Unlock()
	if admin.bad != "" {
		t.Fatalf("the server got a bad batch: %s", admin.bad)
	}
	if admin.applied != 41+5*20 || st.batches != 5 || st.applied != 100 || applied != 100 || len(lat) != 5 {
		t.Errorf("server at seq %d; replicator: %+v, took %d events and %d round trips; want 5 batches of 20 from seq 42", admin.applied, st, applied, len(lat))
	}
	if !strings.Contains(st.err, "409") || !strings.Contains(st.err, "seq 142") {
		t.Errorf("stopped with %q, want the 409 of the batch from seq 142", st.err)
	}
	if a, l := r.take(); a != 0 || len(l) != 0 {
		t.Errorf("a second take gave %d events, %d round trips; want none", a, len(l))
	}
}

// TestPrintSoak: one row per window with the window's own figures, and a
// last line over the whole measured time (latencies pooled exactly).
func TestPrintSoak(t *testing.T) {
	win := func(i int, lat ...time.Duration) soakWindow {
		return soakWindow{from: time.Duration(i) * 30 * time.Second, to: time.Duration(i+1) * 30 * time.Second, wall: 30 * time.Second,
			dec: sliceResults([]stepResult{{ok: len(lat), lat: lat, span: time.Second}, {ok: 0, span: time.Second}}), applied: 3000,
			batchLat: []time.Duration{5 * time.Millisecond, 2 * time.Millisecond}, minflt: 1234, majflt: 56, indexBytes: 500 << 20,
			mem: memStatus{File: 300 << 10, Anon: 20 << 10}, cpu: 4500 * time.Millisecond, runWait: 1200 * time.Millisecond}
	}
	rep := soakReport{cfg: soakConfig{run: runConfig{Records: 900_000}, Rate: 1000, EventsRate: 100, Batch: 100, NewShare: 0.5, Window: 30 * time.Second},
		args: "--index-populate", started: "15:00:00", loadStart: "1.00 1.00 1.00", loadEnd: "2.00 2.00 2.00",
		windows: []soakWindow{win(0, time.Millisecond, 2*time.Millisecond), win(1, 3*time.Millisecond, 9*time.Millisecond)},
		repl:    replStats{err: "the batch from seq 7: 409"}}
	var out bytes.Buffer
	printSoak(&out, rep)
	got := out.String()
	for _, want := range []string{
		`crmauthz args "--index-populate"`,
		"window (s)", "events/s", "majflt",
		"30–60", "1234", "56", "3000", "100", // the second window's faults, events and events/s
		"4.5", "1.2", // CPU and wait for a core, seconds
		"whole: 4 decisions, 0 errors, p50 2.00ms, p99 9.00ms", "6000 events applied (100/s) in 4 batches, batch p99 5.00ms",
		"replication stopped: the batch from seq 7: 409",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the report lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n0–30 ") + strings.Count(got, "\n30–60 "); n != 2 {
		t.Errorf("%d window rows, want 2:\n%s", n, got)
	}
}
