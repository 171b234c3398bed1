package index

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The events of BenchmarkRandomReplication1M generated before the clock: replWorld is an
// in-memory model of the owners and followers of the benchmark's records (record j is
// "r-%08d", an opportunity when j%3 == 0 else a contact; user i is "u-<i>"), read from the index
// itself, and replWorld.batch draws exactly what replBatchOf draws against the index (the same
// random numbers in the same order, TestReplWorldMatchesIndex), then applies the events to the
// model. The timed region then holds the batches' Updates and commits and the merges, as a
// replication client that receives its events drives it; replBatchOf, which reads every record
// through a View in the timed region, stays as the benchmark's "viewgen" variant.
type replWorld struct {
	owner     []int32   // by record number; -1: no owner
	followers [][]int32 // by record number, in the stored order
}

// replCode is one generated event: the op in bits 56–63, the user in 32–55, the record in 0–31.
type replCode uint64

func newReplCode(op byte, user, record int) replCode {
	return replCode(uint64(op)<<56 | uint64(user)<<32 | uint64(record))
}

func (c replCode) op() byte    { return byte(c >> 56) }
func (c replCode) user() int   { return int(c>>32) & (1<<24 - 1) }
func (c replCode) record() int { return int(uint32(c)) }

// replNumber parses the number of a benchmark id ("r-00000042", "u-7").
func replNumber(id, prefix string) (int, error) {
	s, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return 0, fmt.Errorf("id %q: not %q followed by a number", id, prefix)
	}
	return strconv.Atoi(s)
}

// loadReplWorld reads the owners and followers of ix's records (those of benchRows) into a model.
func loadReplWorld(tb testing.TB, ix *Index, records int) *replWorld {
	tb.Helper()
	w := &replWorld{owner: make([]int32, records), followers: make([][]int32, records)}
	users := func(ids ...string) ([]int32, error) {
		out := make([]int32, 0, len(ids))
		for _, id := range ids {
			u, err := replNumber(id, "u-")
			if err != nil {
				return nil, err
			}
			out = append(out, int32(u))
		}
		return out, nil
	}
	seen := 0
	err := ix.View(func(rt *ReadTx) error {
		return rt.ForEachRecord(func(r Record) error {
			j, err := replNumber(r.ID, "r-")
			if err != nil || j >= records {
				return fmt.Errorf("record %q: %v", r.ID, err)
			}
			w.owner[j] = -1
			if r.Owner != "" {
				o, err := users(r.Owner)
				if err != nil {
					return err
				}
				w.owner[j] = o[0]
			}
			if w.followers[j], err = users(r.Followers...); err != nil {
				return err
			}
			seen++
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
	if seen != records {
		tb.Fatalf("the index holds %d records, not %d", seen, records)
	}
	return w
}

// batch appends to dst n events on distinct records drawn as replBatchOf draws them (a third each
// of follower.add of a user not yet following, follower.remove of a current follower and
// owner.set to another user: every event a real change), and applies them to w.
func (w *replWorld) batch(rng *rand.Rand, users, n int, dst []replCode) []replCode {
	records := len(w.owner)
	seen := make(map[int]bool, n)
	for k := 0; k < n; {
		j := rng.IntN(records)
		if seen[j] {
			continue
		}
		seen[j] = true
		fs := w.followers[j]
		other := func() int {
			for {
				u := rng.IntN(users)
				if int32(u) != w.owner[j] && !slices.Contains(fs, int32(u)) {
					return u
				}
			}
		}
		var c replCode
		switch m := k % 3; {
		case m == 2:
			c = newReplCode('o', other(), j)
		case m == 1 && len(fs) > 0 || len(fs) >= 10:
			c = newReplCode('r', int(fs[rng.IntN(len(fs))]), j)
		default:
			c = newReplCode('a', other(), j)
		}
		w.apply(c)
		dst = append(dst, c)
		k++
	}
	return dst
}

// apply applies c to w with WriteTx's semantics (AddFollower appends, RemoveFollower keeps the
// order, SetOwner drops the new owner from the followers) and reports whether it changed
// anything.
func (w *replWorld) apply(c replCode) bool {
	j, u := c.record(), int32(c.user())
	fs := w.followers[j]
	switch c.op() {
	case 'a':
		if u == w.owner[j] || slices.Contains(fs, u) {
			return false
		}
		w.followers[j] = append(fs, u)
	case 'r':
		i := slices.Index(fs, u)
		if i < 0 {
			return false
		}
		w.followers[j] = slices.Delete(fs, i, i+1)
	case 'o':
		if u == w.owner[j] {
			return false
		}
		w.owner[j] = u
		w.followers[j] = slices.DeleteFunc(fs, func(f int32) bool { return f == u })
	}
	return true
}

// replEvents turns codes into the events WriteTx takes, their ids in one string: what a
// replication client does with the events it decodes (~20 ns an event).
func replEvents(codes []replCode, dst []replEvent) []replEvent {
	buf := make([]byte, 0, len(codes)*20)
	type span struct{ id, user [2]int }
	spans := make([]span, len(codes))
	for i, c := range codes {
		s := &spans[i]
		s.id[0] = len(buf)
		buf = append(buf, "r-"...)
		j := c.record()
		for d := 10_000_000; d > 0; d /= 10 {
			buf = append(buf, byte('0'+j/d%10))
		}
		s.id[1], s.user[0] = len(buf), len(buf)
		buf = append(buf, "u-"...)
		buf = strconv.AppendInt(buf, int64(c.user()), 10)
		s.user[1] = len(buf)
	}
	all := string(buf)
	for i, c := range codes {
		s := spans[i]
		typ := TypeContact
		if c.record()%3 == 0 {
			typ = TypeOpportunity
		}
		dst = append(dst, replEvent{op: c.op(), typ: typ, id: all[s.id[0]:s.id[1]], user: all[s.user[0]:s.user[1]]})
	}
	return dst
}

// TestReplWorldMatchesIndex checks that the events BenchmarkRandomReplication1M generates before
// the clock are exactly those replBatchOf draws against the index (the same seed gives the same
// events, batch after batch, while both are applied), that each is a real change (no no-ops), that
// the mix is a third owner.set and about a third each follower.add and follower.remove, and that
// the model equals the index at the end.
func TestReplWorldMatchesIndex(t *testing.T) {
	const (
		users, records, n, batches = 50, 3000, 300, 20
	)
	ix := openTest(t, Config{})
	if err := ix.ReplaceAll(1, benchRows(users, records, 1)); err != nil {
		t.Fatal(err)
	}
	world, check := loadReplWorld(t, ix, records), loadReplWorld(t, ix, records)
	oldRng, newRng := rand.New(rand.NewPCG(3, 0)), rand.New(rand.NewPCG(3, 0))
	var codes []replCode
	ops := map[byte]int{}
	for i := range batches {
		want := replBatchOf(t, ix, oldRng, records, users, n)
		codes = world.batch(newRng, users, n, codes[:0])
		got := replEvents(codes, nil)
		if !slices.Equal(got, want) {
			for k := range min(len(got), len(want)) {
				if got[k] != want[k] {
					t.Fatalf("batch %d event %d: generated %+v, the index's generator %+v", i, k, got[k], want[k])
				}
			}
			t.Fatalf("batch %d: %d events generated, %d from the index's generator", i, len(got), len(want))
		}
		for k, c := range codes {
			if !check.apply(c) {
				t.Fatalf("batch %d event %d (%+v) changes nothing", i, k, got[k])
			}
			ops[c.op()]++
		}
		updateRepl(t, ix, got, uint64(2+i))
	}
	total := float64(n * batches)
	if got := float64(ops['o']) / total; got < 0.33 || got > 0.34 {
		t.Errorf("owner.set share %.3f, want a third", got)
	}
	for _, op := range []byte{'a', 'r'} {
		if got := float64(ops[op]) / total; got < 0.28 || got > 0.39 {
			t.Errorf("%c share %.3f, want about a third", op, got)
		}
	}
	t.Logf("mix over %d events: follower.add %d, follower.remove %d, owner.set %d", int(total), ops['a'], ops['r'], ops['o'])
	end := loadReplWorld(t, ix, records)
	for j := range records {
		if world.owner[j] != end.owner[j] || !slices.Equal(world.followers[j], end.followers[j]) ||
			check.owner[j] != end.owner[j] || !slices.Equal(check.followers[j], end.followers[j]) {
			t.Fatalf("record %d: model owner %d followers %v, index owner %d followers %v",
				j, world.owner[j], world.followers[j], end.owner[j], end.followers[j])
		}
	}
}
