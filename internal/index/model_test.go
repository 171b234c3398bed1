package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// model is the shared reference model (internal/refmodel, docs/reference.md §2.3 over plain maps, written
// independently of the index code) at an applied_seq, under the index's own rules: the ids the
// index refuses and its sentinel errors.
type model struct {
	ref *refmodel.Model
	seq uint64
}

func newModel() *model {
	return &model{ref: refmodel.New()}
}

func (m *model) clone() *model { return &model{ref: m.ref.Clone(), seq: m.seq} }

// apply applies the event of one WriteTx or Loader call, with the error the index must return:
// ErrInvalidID for an id the index refuses (required ones, and the optional ones when not ""),
// checked before anything else, then refmodel's errors as the index's.
func (m *model) apply(e refmodel.Event) error {
	var required, optional []string
	switch e.Op {
	case refmodel.OpUserUpsert:
		required = append([]string{e.User.ID}, e.User.LocationIDs...)
	case refmodel.OpUserDelete:
		required = []string{*e.UserID}
	case refmodel.OpRecordUpsert:
		required = append([]string{e.Record.Type, e.Record.ID, e.Record.LocationID}, e.Record.Followers...)
		optional = []string{e.Record.Owner, e.Record.ContactID}
	case refmodel.OpRecordDelete:
		required = []string{e.Type, e.ID}
	case refmodel.OpFollowerAdd, refmodel.OpFollowerRemove:
		required = []string{*e.UserID, e.Type, e.ID}
	case refmodel.OpOwnerSet:
		required, optional = []string{e.Type, e.ID}, []string{*e.UserID}
	}
	for _, id := range required {
		if idProblem(id) != "" {
			return ErrInvalidID
		}
	}
	for _, id := range optional {
		if id != "" && idProblem(id) != "" {
			return ErrInvalidID
		}
	}
	err := m.ref.Apply(e)
	switch {
	case errors.Is(err, refmodel.ErrRecordNotFound):
		return ErrRecordNotFound
	case errors.Is(err, refmodel.ErrTooManyFollowers):
		return ErrTooManyFollowers
	}
	return err // any other error is a difference between the index and the model
}

// state is the model as the index's types, for compareState.
func (m *model) state() *state {
	s := newState()
	s.Seq = m.seq
	for id, u := range m.ref.Users {
		s.Users[id] = User(u)
	}
	for k, r := range m.ref.Records {
		s.Records[string(recordKey(nil, k.Type, k.ID))] = Record(r)
	}
	return s
}

// op is one random operation, applied to both the model and a WriteTx.
type op struct {
	desc    string
	model   func(*model) error
	index   func(*WriteTx) error
	snapRow func(*Loader) error // for ops usable as snapshot rows
}

type gen struct {
	rng   *rand.Rand
	users []string
	types []string
	locs  []string
	recs  []string
}

func newGen(seed uint64) *gen {
	return &gen{
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		users: ids("u-", 12),
		types: []string{TypeContact, TypeOpportunity},
		locs:  ids("l-", 3),
		recs:  ids("r-", 15),
	}
}

func (g *gen) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

// userID is a user id, now and then an invalid one.
func (g *gen) userID() string {
	if g.rng.IntN(60) == 0 {
		return ""
	}
	return g.pick(g.users)
}

func (g *gen) randUser() User {
	locs := []string{}
	for _, l := range g.locs {
		if g.rng.IntN(2) == 0 {
			locs = append(locs, l)
		}
	}
	return User{ID: g.userID(), Role: []string{"admin", "user"}[g.rng.IntN(2)], LocationIDs: locs,
		AssignedDataOnly: g.rng.IntN(2) == 0, ContactsEnabled: g.rng.IntN(4) != 0, OpportunitiesEnabled: g.rng.IntN(4) != 0}
}

func (g *gen) randRecord() Record {
	r := Record{Type: g.pick(g.types), ID: g.pick(g.recs), LocationID: g.pick(g.locs)}
	if g.rng.IntN(5) != 0 {
		r.Owner = g.pick(g.users)
	}
	n := g.rng.IntN(13) // up to 12 entries: duplicates and the owner may bring them under the max
	if g.rng.IntN(3) == 0 {
		n = g.rng.IntN(4)
	}
	for range n {
		r.Followers = append(r.Followers, g.userID())
	}
	if r.Type == TypeOpportunity && g.rng.IntN(2) == 0 {
		r.ContactID = g.pick(g.recs)
	}
	return r
}

func (g *gen) op() op {
	switch n := g.rng.IntN(100); {
	case n < 12:
		u := g.randUser()
		return op{fmt.Sprintf("PutUser(%+v)", u),
			func(m *model) error {
				ru := refmodel.User(u)
				return m.apply(refmodel.Event{Op: refmodel.OpUserUpsert, User: &ru})
			},
			func(w *WriteTx) error { return w.PutUser(u) },
			func(l *Loader) error { return l.PutUser(u) }}
	case n < 16:
		id := g.userID()
		return op{fmt.Sprintf("DeleteUser(%q)", id),
			func(m *model) error { return m.apply(refmodel.Event{Op: refmodel.OpUserDelete, UserID: &id}) },
			func(w *WriteTx) error { return w.DeleteUser(id) }, nil}
	case n < 40:
		r := g.randRecord()
		return op{fmt.Sprintf("PutRecord(%+v)", r),
			func(m *model) error {
				rr := refmodel.Record(r)
				return m.apply(refmodel.Event{Op: refmodel.OpRecordUpsert, Record: &rr})
			},
			func(w *WriteTx) error { return w.PutRecord(r) },
			func(l *Loader) error { return l.PutRecord(r) }}
	case n < 46:
		typ, id := g.pick(g.types), g.pick(g.recs)
		return op{fmt.Sprintf("DeleteRecord(%q, %q)", typ, id),
			func(m *model) error { return m.apply(refmodel.Event{Op: refmodel.OpRecordDelete, Type: typ, ID: id}) },
			func(w *WriteTx) error { return w.DeleteRecord(typ, id) }, nil}
	case n < 70:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.userID()
		return op{fmt.Sprintf("AddFollower(%q, %q, %q)", typ, id, u),
			func(m *model) error {
				return m.apply(refmodel.Event{Op: refmodel.OpFollowerAdd, Type: typ, ID: id, UserID: &u})
			},
			func(w *WriteTx) error { return w.AddFollower(typ, id, u) }, nil}
	case n < 82:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.userID()
		return op{fmt.Sprintf("RemoveFollower(%q, %q, %q)", typ, id, u),
			func(m *model) error {
				return m.apply(refmodel.Event{Op: refmodel.OpFollowerRemove, Type: typ, ID: id, UserID: &u})
			},
			func(w *WriteTx) error { return w.RemoveFollower(typ, id, u) }, nil}
	default:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.pick(g.users)
		if g.rng.IntN(5) == 0 {
			u = ""
		}
		return op{fmt.Sprintf("SetOwner(%q, %q, %q)", typ, id, u),
			func(m *model) error {
				return m.apply(refmodel.Event{Op: refmodel.OpOwnerSet, Type: typ, ID: id, UserID: &u})
			},
			func(w *WriteTx) error { return w.SetOwner(typ, id, u) }, nil}
	}
}

func sameErr(got, want error) bool {
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

// checkAgainstModel compares the whole index, in one read transaction, with the model.
func checkAgainstModel(tb testing.TB, ix *Index, m *model, g *gen, step string) {
	tb.Helper()
	want := m.state()
	if ix.AppliedSeq() != want.Seq {
		tb.Fatalf("%s: cached AppliedSeq %d, want %d", step, ix.AppliedSeq(), want.Seq)
	}
	if c, want := ix.Counts(), want.counts(); !equalCounts(c, want) {
		tb.Fatalf("%s: cached Counts %+v, want %+v", step, c, want)
	}
	mustView(tb, ix, func(rt *ReadTx) error {
		got := readState(tb, rt)
		compareState(tb, got, want)
		checkReverseIndex(tb, rt)
		if c, want := rt.Counts(), want.counts(); !equalCounts(c, want) {
			tb.Errorf("Counts %+v, want %+v", c, want)
		}
		for _, u := range g.users {
			for _, typ := range g.types {
				for _, loc := range g.locs {
					limit := 1 + g.rng.IntN(4)
					got := allSubjectRecords(tb, rt, u, typ, loc, limit)
					if want := m.ref.SubjectRecords(u, typ, loc); !slices.Equal(got, want) {
						tb.Errorf("SubjectRecords(%s, %s, %s, limit %d) = %q, want %q", u, typ, loc, limit, got, want)
					}
				}
			}
		}
		return nil
	})
	if tb.Failed() {
		tb.Fatalf("index and model differ after %s", step)
	}
}

// TestRandomAgainstModel applies a few thousand random operations, in batches, some rolled back,
// with a ReplaceAll now and then, and compares everything with the model after every commit.
//
// The overlay (overlay.go) is driven too: seeds 4–6 use a small Config.MergeBytes, so that
// Updates merge on their own, and every seed merges at random points, reopens the index
// (rebuilding the overlay from the delta log) and "crashes" mid-merge (a merge stopped after a
// random chunk, then the index reopened), comparing after each. Every seed also starts
// background merges at random points (some stopped after a random commit, leaving the frozen
// layer in place): the following batches and comparisons run beside them. Seed 7 writes the main buckets
// directly (tuning.direct, the layout the benchmark compares with). Seeds 8 and 9 write the delta
// log's entries flat, as code before session 9 of issue 17 did (delta.go); seed 9 switches
// between the two layouts at every reopen, so its log holds both (a file upgraded mid-merge).
func TestRandomAgainstModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			g := newGen(seed)
			cfg := Config{Dir: t.TempDir()}
			if seed > 3 {
				cfg.MergeBytes = int64(300 + g.rng.IntN(3000))
			}
			tune := defaultTuning()
			tune.direct = seed == 7
			tune.flatDelta = seed >= 8
			ix, err := openTuned(cfg, tune)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ix.Close() })
			m := newModel()
			ops, merges := 0, int64(0)
			for batch := 0; batch < 1000; batch++ {
				switch n := g.rng.IntN(200); {
				case n < 5:
					replaceRandom(t, ix, m, g, batch)
					continue
				case n < 15:
					ix.mergeChunk = 1 + g.rng.IntN(8)
					forceMerge(t, ix, -1)
					checkAgainstModel(t, ix, m, g, fmt.Sprintf("batch %d: merge", batch))
				case n < 20:
					merges += ix.merges.Load()
					if seed == 9 {
						ix.tune.flatDelta = !ix.tune.flatDelta
					}
					ix = reopen(t, ix, cfg)
					checkAgainstModel(t, ix, m, g, fmt.Sprintf("batch %d: reopen", batch))
				case n < 25:
					ix.mergeChunk = 1 + g.rng.IntN(4)
					forceMerge(t, ix, g.rng.IntN(6))
					merges += ix.merges.Load()
					if seed == 9 {
						ix.tune.flatDelta = !ix.tune.flatDelta
					}
					ix = reopen(t, ix, cfg)
					checkAgainstModel(t, ix, m, g, fmt.Sprintf("batch %d: crash mid-merge", batch))
				case n < 35:
					// A background merge the next batches and checks run beside; now and then
					// it stops after a random commit (as a failed commit would): the frozen
					// layer stays in front of the half-merged main buckets until the next merge
					// takes it up again.
					var hook func(int, bool) error
					if n >= 31 {
						stop := g.rng.IntN(6)
						hook = func(chunk int, last bool) error {
							if chunk == stop && !last {
								return errCrash
							}
							return nil
						}
					}
					startBackgroundMerge(t, ix, 1+g.rng.IntN(8), hook)
				}
				next := m.clone()
				// Mostly the replication way: the first failing op aborts the batch. Sometimes
				// the errors are ignored and the batch commits: a failed op must have written nothing.
				abortOnError := g.rng.IntN(4) != 0
				n := 1 + g.rng.IntN(6)
				var log []string
				var failed error
				err := ix.Update(func(w *WriteTx) error {
					for range n {
						o := g.op()
						ops++
						wantErr := o.model(next)
						gotErr := o.index(w)
						log = append(log, fmt.Sprintf("%s = %v", o.desc, gotErr))
						if !sameErr(gotErr, wantErr) {
							t.Fatalf("batch %d: %s: error %v, model says %v", batch, o.desc, gotErr, wantErr)
						}
						if gotErr != nil && abortOnError {
							failed = gotErr
							return gotErr
						}
					}
					next.seq = m.seq + uint64(n)
					return w.SetAppliedSeq(next.seq)
				})
				if err != failed {
					t.Fatalf("batch %d: Update = %v, want %v", batch, err, failed)
				}
				if err == nil {
					m = next
				}
				checkAgainstModel(t, ix, m, g, fmt.Sprintf("batch %d %q", batch, log))
			}
			t.Logf("%d ops, %d merges by Update; final counts %+v", ops, merges+ix.merges.Load(), m.state().counts())
		})
	}
}

// replaceRandom loads a random snapshot (rows with duplicates and invalid ones, which the load
// skips), or one whose load fails half-way, and updates the model accordingly.
func replaceRandom(tb testing.TB, ix *Index, m *model, g *gen, batch int) {
	tb.Helper()
	fail := g.rng.IntN(3) == 0
	next := newModel()
	next.seq = uint64(g.rng.IntN(1000))
	rows := 1 + g.rng.IntN(60)
	boom := errors.New("load failed")
	// Now and then tiny spill runs and commits, so that rows for one key land in different runs.
	ix.runBuffer, ix.bulkCommit = runBufferBytes, bulkCommitPuts
	if g.rng.IntN(2) == 0 {
		ix.runBuffer, ix.bulkCommit = 1+g.rng.IntN(300), 1+g.rng.IntN(20)
	}
	err := ix.ReplaceAll(next.seq, func(l *Loader) error {
		for i := 0; i < rows; i++ {
			var o op
			for o.snapRow == nil {
				o = g.op()
			}
			wantErr := o.model(next)
			if gotErr := o.snapRow(l); !sameErr(gotErr, wantErr) {
				tb.Fatalf("snapshot row %s: error %v, model says %v", o.desc, gotErr, wantErr)
			}
			if fail && i == rows/2 {
				return boom
			}
		}
		return nil
	})
	if fail {
		if err != boom {
			tb.Fatalf("ReplaceAll with a failing load = %v", err)
		}
	} else {
		if err != nil {
			tb.Fatalf("ReplaceAll: %v", err)
		}
		*m = *next
	}
	checkAgainstModel(tb, ix, m, g, fmt.Sprintf("batch %d: ReplaceAll (fail %v)", batch, fail))
}
