package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/policies"
)

// The world of the concurrency test is a pure function of the seq: event s
// rewrites record c-(s mod K) to recordAt(r, s). A snapshot at seq S holds
// exactly stateAt(S). So whatever mix of batches and snapshot swaps happened,
// a decision that reports applied_seq S must equal the reference policy's
// answer over stateAt(S).
const (
	concRecords = 8
	concUsers   = 5
)

func touches(r, s int) int { // how many events in 1..s rewrote record r
	if r == 0 {
		return s / concRecords
	}
	if s < r {
		return 0
	}
	return (s-r)/concRecords + 1
}

func recordJSON(r, s int) string {
	n := touches(r, s)
	followers := fmt.Sprintf(`["u-%d"]`, (n+1)%concUsers)
	if n%4 == 3 {
		followers = `[]`
	}
	return fmt.Sprintf(`{"type":"contact","id":"c-%d","location_id":"loc-1","owner":"u-%d","followers":%s}`, r, n%concUsers, followers)
}

func userJSON(u int) string {
	return fmt.Sprintf(`{"id":"u-%d","role":"user","location_ids":["loc-1"],"assigned_data_only":true,"contacts_enabled":true,"opportunities_enabled":true}`, u)
}

func snapshotAt(s int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\"seq\":%d}\n", s)
	for u := 0; u < concUsers; u++ {
		fmt.Fprintf(&b, "{\"user\":%s}\n", userJSON(u))
	}
	for r := 0; r < concRecords; r++ {
		fmt.Fprintf(&b, "{\"record\":%s}\n", recordJSON(r, s))
	}
	return b.String()
}

// stateFacts is stateAt(s) as policy.Facts.
type stateFacts int

func (s stateFacts) UserJSON(id string) ([]byte, error) {
	var u int
	if _, err := fmt.Sscanf(id, "u-%d", &u); err != nil || u < 0 || u >= concUsers {
		return nil, nil
	}
	return []byte(userJSON(u)), nil
}

func (s stateFacts) RecordJSON(typ, id string) ([]byte, error) {
	var r int
	if _, err := fmt.Sscanf(id, "c-%d", &r); err != nil || typ != "contact" || r < 0 || r >= concRecords {
		return nil, nil
	}
	return []byte(recordJSON(r, int(s))), nil
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors here: %v", err)
	}
	return len(ents)
}

// TestConcurrentDecisionsBatchesSnapshotsReloads runs, at once, decision
// clients, a replication feeder, snapshot swaps and policy reloads (two
// policy versions that differ on followers_can_delete), under -race. Every
// decision must equal the reference answer for its applied_seq and its
// policy revision: no torn reads. Afterwards no goroutine or descriptor is left.
func TestConcurrentDecisionsBatchesSnapshotsReloads(t *testing.T) {
	goroutinesBefore := runtime.NumGoroutine()
	fdsBefore := countFDs(t)

	polDir := t.TempDir()
	config := map[bool]string{}
	for _, v := range []bool{false, true} {
		b, err := policies.FS.ReadFile("crmauthz/config.rego")
		if err != nil {
			t.Fatal(err)
		}
		config[v] = strings.Replace(string(b), "followers_can_delete := false", fmt.Sprintf("followers_can_delete := %v", v), 1)
		if config[v] == string(b) && v {
			t.Fatal("config.rego has no followers_can_delete := false to flip")
		}
	}
	authz, err := policies.FS.ReadFile("crmauthz/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	writePolicy := func(canDelete bool) {
		for name, content := range map[string]string{"authz.rego": string(authz), "config.rego": config[canDelete]} {
			tmp := filepath.Join(polDir, "."+name+".tmp")
			if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(polDir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The reference engines, one per policy version, by revision; no cache.
	refs := map[string]*policy.Engine{}
	for _, v := range []bool{false, true} {
		writePolicy(v)
		e, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, Dir: polDir, DecisionCacheSlots: -1})
		if err != nil {
			t.Fatal(err)
		}
		refs[e.Revision()] = e
	}
	if len(refs) != 2 {
		t.Fatal("the two policy versions have one revision")
	}

	ix, err := index.Open(index.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repl.LoadSnapshot(strings.NewReader(snapshotAt(0))); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, Dir: polDir})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Index: ix, Engine: eng, Replicator: repl, Metrics: metrics.New(metrics.Config{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Token: []byte("tok")})
	if err != nil {
		t.Fatal(err)
	}
	dec, adm := s.DecisionHandler(), s.AdminHandler()
	auth := map[string]string{"Authorization": "Bearer tok"}

	// Each worker does a fixed amount of work, however long it takes: the
	// swaps wait for batches and the reloads for decisions, so they happen
	// amid the others, and the decision clients go on until every other
	// worker is done. Nothing is counted in a fixed time.
	const (
		wantBatches   = 30
		wantSwaps     = 8
		wantReloads   = 8
		minPerClient  = 100
		decisionUsers = 3
	)
	var (
		wg                         sync.WaitGroup
		abort                      = make(chan struct{})
		abortOnce                  sync.Once
		checked, swaps, reloads    atomic.Int64
		batches, refusedWhileSwaps atomic.Int64
		othersLeft                 atomic.Int32 // feeder, swapper, reloader
		failures                   = make(chan string, 10)
	)
	othersLeft.Store(3)
	fail := func(msg string) {
		select {
		case failures <- msg:
		default:
		}
		abortOnce.Do(func() { close(abort) })
	}
	aborted := func() bool {
		select {
		case <-abort:
			return true
		default:
			return false
		}
	}
	// waitFor polls cond until it holds (true) or a worker failed (false).
	waitFor := func(cond func() bool) bool {
		for !cond() {
			if aborted() {
				return false
			}
			time.Sleep(time.Millisecond)
		}
		return true
	}

	for g := 0; g < decisionUsers; g++ { // decision clients
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			for n := 0; !aborted() && (n < minPerClient || othersLeft.Load() > 0); n++ {
				subject := fmt.Sprintf("u-%d", rng.IntN(concUsers))
				action := []string{"view", "edit", "delete"}[rng.IntN(3)]
				id := fmt.Sprintf("c-%d", rng.IntN(concRecords))
				rec := serve(dec, http.MethodPost, "/v1/decision",
					fmt.Sprintf(`{"subject":%q,"action":%q,"resource":{"type":"contact","id":%q}}`, subject, action, id), nil)
				var got struct {
					Allow      bool
					Reason     string
					AppliedSeq int    `json:"applied_seq"`
					Revision   string `json:"policy_revision"`
				}
				if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
					fail(fmt.Sprintf("decision: %d %s", rec.Code, rec.Body))
					return
				}
				ref, ok := refs[got.Revision]
				if !ok {
					fail("unknown revision " + got.Revision)
					return
				}
				want, _, err := ref.Decide(context.Background(), stateFacts(got.AppliedSeq),
					policy.Input{Subject: subject, Action: action, ResourceType: "contact", ResourceID: id})
				if err != nil || want.Allow != got.Allow || want.Reason != got.Reason {
					fail(fmt.Sprintf("%s %s %s at seq %d, revision %s: got %v %s, reference %v %s (%v)",
						subject, action, id, got.AppliedSeq, got.Revision, got.Allow, got.Reason, want.Allow, want.Reason, err))
					return
				}
				checked.Add(1)
			}
		}()
	}

	wg.Add(1)
	go func() { // replication feeder: wantBatches applied batches
		defer wg.Done()
		defer othersLeft.Add(-1)
		rng := rand.New(rand.NewPCG(9, 9))
		for batches.Load() < wantBatches && !aborted() {
			next := int(ix.AppliedSeq()) + 1
			n := 1 + rng.IntN(20)
			var b strings.Builder
			b.WriteString(`{"events":[`)
			for s := next; s < next+n; s++ {
				if s > next {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"seq":%d,"op":"record.upsert","record":%s}`, s, recordJSON(s%concRecords, s))
			}
			b.WriteString(`]}`)
			rec := serve(adm, http.MethodPost, "/v1/replication/events", b.String(), auth)
			switch {
			case rec.Code == 200:
				batches.Add(1)
			case rec.Code == 503 && strings.Contains(rec.Body.String(), "snapshot_in_progress"),
				rec.Code == 409 && strings.Contains(rec.Body.String(), "sequence_gap"): // a swap moved applied_seq
				refusedWhileSwaps.Add(1)
				runtime.Gosched()
			default:
				fail(fmt.Sprintf("batch: %d %s", rec.Code, rec.Body))
				return
			}
		}
	}()

	wg.Add(1)
	go func() { // snapshot swaps, back to an earlier state, among the batches
		defer wg.Done()
		defer othersLeft.Add(-1)
		rng := rand.New(rand.NewPCG(3, 3))
		for i := int64(1); i <= wantSwaps; i++ {
			if !waitFor(func() bool { return batches.Load() >= i*wantBatches/(wantSwaps+1) }) {
				return
			}
			target := max(0, int(ix.AppliedSeq())-rng.IntN(30))
			rec := serve(adm, http.MethodPut, "/v1/replication/snapshot", snapshotAt(target), auth)
			if rec.Code != 200 {
				fail(fmt.Sprintf("snapshot: %d %s", rec.Code, rec.Body))
				return
			}
			swaps.Add(1)
		}
	}()

	wg.Add(1)
	go func() { // policy reloads between the two versions, among the decisions
		defer wg.Done()
		defer othersLeft.Add(-1)
		v := true
		for i := int64(1); i <= wantReloads; i++ {
			if !waitFor(func() bool { return checked.Load() >= i*decisionUsers*minPerClient/(wantReloads+1) }) {
				return
			}
			writePolicy(v)
			if err := eng.Reload(); err != nil {
				fail("reload: " + err.Error())
				return
			}
			reloads.Add(1)
			v = !v
		}
	}()

	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	t.Logf("%d decisions checked, %d batches applied (%d refused by a concurrent swap), %d snapshot swaps, %d reloads",
		checked.Load(), batches.Load(), refusedWhileSwaps.Load(), swaps.Load(), reloads.Load())
	if t.Failed() {
		t.FailNow()
	}
	if checked.Load() < decisionUsers*minPerClient || batches.Load() != wantBatches || swaps.Load() != wantSwaps || reloads.Load() != wantReloads {
		t.Fatalf("the workers did not do their work")
	}

	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	// No goroutine or descriptor outlives the index (give the runtime a
	// moment; generous, for a loaded machine: a leak never ends).
	var g, fds int
	if !poll(t, time.Minute, func() bool {
		g, fds = runtime.NumGoroutine(), countFDs(t)
		return g <= goroutinesBefore+2 && fds <= fdsBefore
	}) {
		t.Fatalf("leak: goroutines %d -> %d, file descriptors %d -> %d", goroutinesBefore, g, fdsBefore, fds)
	}
}

// poll calls cond until it holds (true) or timeout has passed (false): a
// bound on a hang, not on speed. The caller says what did not happen.
func poll(tb testing.TB, timeout time.Duration, cond func() bool) bool {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
