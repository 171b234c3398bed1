package index

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// countingSource counts the delta entries a layer reads.
type countingSource struct {
	deltaSource
	reads int
}

func (c *countingSource) entry(gen uint64) []byte {
	c.reads++
	return c.deltaSource.entry(gen)
}

// TestSubjectRecordsTagged: with the overlay full of byuser keys of many types and locations
// (enough that some share a tag, keyHash), SubjectRecords returns exactly the ids the records
// imply, before the merge and after it (the main buckets); and a scan of one user, type and
// location reads from the delta log exactly the user's keys whose tag is the prefix's.
func TestSubjectRecordsTagged(t *testing.T) {
	ix := openTest(t, Config{MergeBytes: 1 << 40})
	rng := rand.New(rand.NewPCG(17, 17))
	users := ids("u-", 6)
	types := []string{TypeContact, TypeOpportunity, "deal"}
	locs := ids("l-", 40)
	recs := map[string]Record{} // by type/id: what the index must hold
	apply := func(n int) {
		t.Helper()
		mustUpdate(t, ix, func(w *WriteTx) error {
			for range n {
				r := Record{Type: types[rng.IntN(len(types))], ID: fmt.Sprint("r-", rng.IntN(400)),
					LocationID: locs[rng.IntN(len(locs))], Owner: users[rng.IntN(len(users))]}
				for range rng.IntN(4) {
					r.Followers = append(r.Followers, users[rng.IntN(len(users))])
				}
				key := r.Type + "/" + r.ID
				if _, ok := recs[key]; ok && rng.IntN(4) == 0 {
					if err := w.DeleteRecord(r.Type, r.ID); err != nil {
						return err
					}
					delete(recs, key)
					continue
				}
				if err := w.PutRecord(r); err != nil {
					return err
				}
				nr, err := normaliseRecord(r, 10)
				if err != nil {
					return err
				}
				recs[key] = nr
			}
			return nil
		})
	}
	check := func(step string) {
		t.Helper()
		mustView(t, ix, func(rt *ReadTx) error {
			for _, u := range users {
				for _, typ := range types {
					for _, loc := range locs {
						want := []string{}
						for _, r := range recs {
							if r.Type == typ && r.LocationID == loc && (r.Owner == u || slices.Contains(r.Followers, u)) {
								want = append(want, r.ID)
							}
						}
						slices.Sort(want)
						got := allSubjectRecords(t, rt, u, typ, loc, 1+rng.IntN(4))
						if !slices.Equal(got, want) {
							t.Errorf("%s: SubjectRecords(%s, %s, %s) = %q, want %q", step, u, typ, loc, got, want)
						}
					}
				}
			}
			return nil
		})
		if t.Failed() {
			t.FailNow()
		}
	}
	apply(300)
	forceMerge(t, ix, -1) // some keys in the main buckets, hidden or not by the overlay's
	for range 4 {
		apply(300)
	}
	check("overlay")

	st := ix.cur.ov.Load()
	tags := map[uint8]string{}
	collide := false
	for _, typ := range types {
		for _, loc := range locs {
			tl := typ + "\x00" + loc
			if _, ok := tags[st.lay.tag([]byte(tl))]; ok {
				collide = true
			}
			tags[st.lay.tag([]byte(tl))] = tl
		}
	}
	if !collide {
		t.Fatal("no two (type, location) share a tag: the test does not cover a tag's false match")
	}
	skipped := false
	mustView(t, ix, func(rt *ReadTx) error {
		if rt.lay != st.lay {
			return fmt.Errorf("the view reads another layer")
		}
		for _, u := range users {
			list := st.lay.byUser[u]
			for _, typ := range types {
				for _, loc := range locs {
					prefix := byUserPrefix(nil, u, typ, loc)
					tag := st.lay.tag([]byte(typ + "\x00" + loc))
					same := 0
					for _, ref := range list {
						sh := &st.lay.b[bByUser][ref>>keyIndexBits]
						if storedTag(*sh.hash.at(ref & (1<<keyIndexBits - 1))) == tag {
							same++
						}
					}
					src := &countingSource{deltaSource: rt.deltas()}
					st.lay.keys(bByUser, prefix, prefix, rt.gen, src, nil)
					if src.reads != same {
						t.Errorf("scan of %q read %d delta entries, want %d (of the user's %d keys, those with its tag)",
							prefix, src.reads, same, len(list))
					}
					skipped = skipped || same < len(list)
				}
			}
		}
		return nil
	})
	if !skipped {
		t.Fatal("no scan skipped a key")
	}
	forceMerge(t, ix, -1)
	check("merged")
}
