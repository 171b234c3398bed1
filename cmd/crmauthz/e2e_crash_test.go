package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// exported reads the server's snapshot export into a reference model.
func exported(tb testing.TB, p *proc) (uint64, *refmodel.Model) {
	tb.Helper()
	code, raw := callRaw(tb, http.MethodGet, p.admin+"/v1/replication/snapshot", nil, authz)
	if code != 200 {
		tb.Fatalf("export: %d %s", code, raw)
	}
	seq, m, err := refmodel.ReadSnapshot(bytes.NewReader(raw))
	if err != nil {
		tb.Fatalf("export: %v", err)
	}
	return seq, m
}

// modelAt applies events[:seq] to a new reference model.
func modelAt(tb testing.TB, events []refmodel.Event, seq uint64) *refmodel.Model {
	tb.Helper()
	m := refmodel.New()
	for _, e := range events[:seq] {
		if err := m.Apply(e); err != nil {
			tb.Fatalf("reference model: event %d: %v", e.Seq, err)
		}
	}
	return m
}

// TestCrashRecovery streams batches into the real binary, kills it with
// SIGKILL at random moments (sometimes during a snapshot load), restarts it,
// and checks after every restart that applied_seq covers every acknowledged
// batch and that the whole index equals the reference model at applied_seq:
// nothing lost, nothing half-applied.
func TestCrashRecovery(t *testing.T) {
	const kills = 24
	events := refmodel.Events(t, refmodel.GenConfig{Seed: 7}, 30000)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(42, 1))
	acked := 0
	for round := 0; round < kills; round++ {
		p := startServer(t, dir)
		applied, got := exported(t, p)
		seq := int(applied)
		if seq < acked {
			t.Fatalf("round %d: applied_seq %d after restart, but seq %d was acknowledged", round, seq, acked)
		}
		if want := modelAt(t, events, applied); got.Canonical() != want.Canonical() {
			t.Fatalf("round %d: the index at applied_seq %d differs from the reference model", round, seq)
		}
		acked = seq
		if seq >= len(events) {
			p.stop()
			break
		}

		var ackedNow atomic.Int64
		ackedNow.Store(int64(seq))
		done := make(chan struct{})
		feedRng := rand.New(rand.NewPCG(uint64(round), 3))
		// Every sixth round, a snapshot of an earlier state, then the events after it.
		back, snapshot := -1, ""
		if round%6 == 5 {
			back = max(0, seq-feedRng.IntN(50))
			snapshot = modelAt(t, events, uint64(back)).Snapshot(uint64(back))
		}
		go func() { // the feeder: batches of 1–60 events until the process dies
			defer close(done)
			rng := feedRng
			next := seq + 1
			if back >= 0 {
				ackedNow.Store(int64(back)) // once sent, the index may hold either state
				req, _ := http.NewRequest(http.MethodPut, p.admin+"/v1/replication/snapshot", strings.NewReader(snapshot))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return
				}
				next = back + 1
			}
			for next <= len(events) {
				n := 1 + rng.IntN(60)
				end := min(next+n-1, len(events))
				body, _ := json.Marshal(map[string]any{"events": events[next-1 : end]})
				req, _ := http.NewRequest(http.MethodPost, p.admin+"/v1/replication/events", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					return // killed
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("round %d: batch %d..%d: status %d", round, next, end, resp.StatusCode)
					return
				}
				ackedNow.Store(int64(end))
				next = end + 1
			}
		}()
		time.Sleep(time.Duration(5+rng.IntN(120)) * time.Millisecond)
		p.kill()
		<-done
		acked = int(ackedNow.Load())
	}
	p := startServer(t, dir)
	seq, got := exported(t, p)
	if equal := got.Canonical() == modelAt(t, events, seq).Canonical(); int(seq) < acked || !equal {
		t.Fatalf("final: applied_seq %d (acknowledged %d), index equal to the model: %v", seq, acked, equal)
	}
	t.Logf("%d kills, final applied_seq %d of %d events", kills, seq, len(events))
}
