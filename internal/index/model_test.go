package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// model is a reference implementation of the index's write semantics over plain maps, written
// from SPEC §2 independently of the index code.
type model struct {
	s   *state
	max int
}

func modelIDErr(required bool, ids ...string) error {
	for _, id := range ids {
		if (required || id != "") && idProblem(id) != "" {
			return ErrInvalidID
		}
	}
	return nil
}

func (m *model) key(typ, id string) string { return typ + "\x00" + id }

func (m *model) putUser(u User) error {
	if err := modelIDErr(true, append([]string{u.ID}, u.LocationIDs...)...); err != nil {
		return err
	}
	u.LocationIDs = append([]string{}, u.LocationIDs...)
	m.s.Users[u.ID] = u
	return nil
}

func (m *model) deleteUser(id string) error {
	if err := modelIDErr(true, id); err != nil {
		return err
	}
	delete(m.s.Users, id)
	for k, r := range m.s.Records {
		if r.Owner == id {
			r.Owner = ""
		}
		r.Followers = slices.DeleteFunc(slices.Clone(r.Followers), func(f string) bool { return f == id })
		m.s.Records[k] = r
	}
	return nil
}

func (m *model) normalise(r Record) (Record, error) {
	if err := modelIDErr(true, append([]string{r.Type, r.ID, r.LocationID}, r.Followers...)...); err != nil {
		return r, err
	}
	if err := modelIDErr(false, r.Owner, r.ContactID); err != nil {
		return r, err
	}
	seen := map[string]bool{r.Owner: true}
	fs := []string{}
	for _, f := range r.Followers {
		if !seen[f] {
			seen[f] = true
			fs = append(fs, f)
		}
	}
	if len(fs) > m.max {
		return r, ErrTooManyFollowers
	}
	r.Followers = fs
	return r, nil
}

func (m *model) putRecord(r Record) error {
	r, err := m.normalise(r)
	if err != nil {
		return err
	}
	m.s.Records[m.key(r.Type, r.ID)] = r
	return nil
}

func (m *model) deleteRecord(typ, id string) error {
	if err := modelIDErr(true, typ, id); err != nil {
		return err
	}
	delete(m.s.Records, m.key(typ, id))
	return nil
}

// existing validates the ids and finds the record.
func (m *model) existing(typ, id string, userRequired bool, userID string) (Record, error) {
	if err := modelIDErr(userRequired, userID); err != nil {
		return Record{}, err
	}
	if err := modelIDErr(true, typ, id); err != nil {
		return Record{}, err
	}
	r, ok := m.s.Records[m.key(typ, id)]
	if !ok {
		return r, ErrRecordNotFound
	}
	r.Followers = slices.Clone(r.Followers)
	return r, nil
}

func (m *model) addFollower(typ, id, u string) error {
	r, err := m.existing(typ, id, true, u)
	if err != nil {
		return err
	}
	if r.Owner == u || slices.Contains(r.Followers, u) {
		return nil
	}
	if len(r.Followers) >= m.max {
		return ErrTooManyFollowers
	}
	r.Followers = append(r.Followers, u)
	m.s.Records[m.key(typ, id)] = r
	return nil
}

func (m *model) removeFollower(typ, id, u string) error {
	r, err := m.existing(typ, id, true, u)
	if err != nil {
		return err
	}
	r.Followers = slices.DeleteFunc(r.Followers, func(f string) bool { return f == u })
	m.s.Records[m.key(typ, id)] = r
	return nil
}

func (m *model) setOwner(typ, id, u string) error {
	r, err := m.existing(typ, id, false, u)
	if err != nil {
		return err
	}
	r.Owner = u
	r.Followers = slices.DeleteFunc(r.Followers, func(f string) bool { return f == u })
	m.s.Records[m.key(typ, id)] = r
	return nil
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
			func(m *model) error { return m.putUser(u) },
			func(w *WriteTx) error { return w.PutUser(u) },
			func(l *Loader) error { return l.PutUser(u) }}
	case n < 16:
		id := g.userID()
		return op{fmt.Sprintf("DeleteUser(%q)", id),
			func(m *model) error { return m.deleteUser(id) },
			func(w *WriteTx) error { return w.DeleteUser(id) }, nil}
	case n < 40:
		r := g.randRecord()
		return op{fmt.Sprintf("PutRecord(%+v)", r),
			func(m *model) error { return m.putRecord(r) },
			func(w *WriteTx) error { return w.PutRecord(r) },
			func(l *Loader) error { return l.PutRecord(r) }}
	case n < 46:
		typ, id := g.pick(g.types), g.pick(g.recs)
		return op{fmt.Sprintf("DeleteRecord(%q, %q)", typ, id),
			func(m *model) error { return m.deleteRecord(typ, id) },
			func(w *WriteTx) error { return w.DeleteRecord(typ, id) }, nil}
	case n < 70:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.userID()
		return op{fmt.Sprintf("AddFollower(%q, %q, %q)", typ, id, u),
			func(m *model) error { return m.addFollower(typ, id, u) },
			func(w *WriteTx) error { return w.AddFollower(typ, id, u) }, nil}
	case n < 82:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.userID()
		return op{fmt.Sprintf("RemoveFollower(%q, %q, %q)", typ, id, u),
			func(m *model) error { return m.removeFollower(typ, id, u) },
			func(w *WriteTx) error { return w.RemoveFollower(typ, id, u) }, nil}
	default:
		typ, id, u := g.pick(g.types), g.pick(g.recs), g.pick(g.users)
		if g.rng.IntN(5) == 0 {
			u = ""
		}
		return op{fmt.Sprintf("SetOwner(%q, %q, %q)", typ, id, u),
			func(m *model) error { return m.setOwner(typ, id, u) },
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
	if ix.AppliedSeq() != m.s.Seq {
		tb.Fatalf("%s: cached AppliedSeq %d, want %d", step, ix.AppliedSeq(), m.s.Seq)
	}
	if c, want := ix.Counts(), m.s.counts(); !equalCounts(c, want) {
		tb.Fatalf("%s: cached Counts %+v, want %+v", step, c, want)
	}
	mustView(tb, ix, func(rt *ReadTx) error {
		got := readState(tb, rt)
		compareState(tb, got, m.s)
		checkReverseIndex(tb, rt)
		if c, want := rt.Counts(), m.s.counts(); !equalCounts(c, want) {
			tb.Errorf("Counts %+v, want %+v", c, want)
		}
		for _, u := range g.users {
			for _, typ := range g.types {
				for _, loc := range g.locs {
					limit := 1 + g.rng.IntN(4)
					got := allSubjectRecords(tb, rt, u, typ, loc, limit)
					if want := m.s.subjectRecords(u, typ, loc); !slices.Equal(got, want) {
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
func TestRandomAgainstModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			g := newGen(seed)
			ix := openTest(t, Config{})
			m := &model{s: newState(), max: 10}
			ops := 0
			for batch := 0; batch < 1000; batch++ {
				if g.rng.IntN(40) == 0 {
					replaceRandom(t, ix, m, g, batch)
					continue
				}
				next := m.s.clone()
				nm := &model{s: next, max: m.max}
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
						wantErr := o.model(nm)
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
					next.Seq = m.s.Seq + uint64(n)
					return w.SetAppliedSeq(next.Seq)
				})
				if err != failed {
					t.Fatalf("batch %d: Update = %v, want %v", batch, err, failed)
				}
				if err == nil {
					m.s = next
				}
				checkAgainstModel(t, ix, m, g, fmt.Sprintf("batch %d %q", batch, log))
			}
			t.Logf("%d ops; final counts %+v", ops, m.s.counts())
		})
	}
}

// replaceRandom loads a random snapshot (rows with duplicates and invalid ones, which the load
// skips), or one whose load fails half-way, and updates the model accordingly.
func replaceRandom(tb testing.TB, ix *Index, m *model, g *gen, batch int) {
	tb.Helper()
	fail := g.rng.IntN(3) == 0
	next := &model{s: newState(), max: m.max}
	next.s.Seq = uint64(g.rng.IntN(1000))
	rows := 1 + g.rng.IntN(60)
	boom := errors.New("load failed")
	// Now and then tiny spill runs and commits, so that rows for one key land in different runs.
	ix.runBuffer, ix.bulkCommit = runBufferBytes, bulkCommitPuts
	if g.rng.IntN(2) == 0 {
		ix.runBuffer, ix.bulkCommit = 1+g.rng.IntN(300), 1+g.rng.IntN(20)
	}
	err := ix.ReplaceAll(next.s.Seq, func(l *Loader) error {
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
		m.s = next.s
	}
	checkAgainstModel(tb, ix, m, g, fmt.Sprintf("batch %d: ReplaceAll (fail %v)", batch, fail))
}
