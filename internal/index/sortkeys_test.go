package index

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// sortByKeyed sorts keys as a merge does (sortKeyed, the keys given by their index in keys) and
// returns them in that order.
func sortByKeyed(keys [][]byte) [][]byte {
	s := make([]keyedRef, len(keys))
	for i, k := range keys {
		s[i] = keyedRef{word: keyWord(k, 0), r: mref{gen: uint32(i), klen: uint16(len(k))}}
	}
	sortKeyed(s, 0, func(r mref) []byte { return keys[r.gen] })
	out := make([][]byte, len(s))
	for i, k := range s {
		out[i] = keys[k.r.gen]
	}
	return out
}

// adversarialKeys are distinct keys that share prefixes longer than one or several cached words,
// differ only by trailing zeros or in their last byte, or are empty or long.
func adversarialKeys(rng *rand.Rand) [][]byte {
	seen := map[string]bool{}
	var keys [][]byte
	add := func(k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, k)
		}
	}
	add(nil)
	long := bytes.Repeat([]byte("contact\x00"), 40) // 320 bytes: 40 words alike
	for n := 0; n <= len(long); n++ {
		add(bytes.Clone(long[:n]))
	}
	for _, base := range [][]byte{nil, []byte("u-0001\x00contact\x00loc-1\x00"), long[:7], long[:8], long[:9], long[:16], long} {
		for z := 1; z <= 18; z++ { // trailing zeros: equal words, different lengths
			add(append(bytes.Clone(base), make([]byte, z)...))
		}
		for _, c := range []byte{0, 1, 0x7f, 0x80, 0xfe, 0xff} {
			for pad := 0; pad <= 17; pad++ {
				k := append(bytes.Clone(base), make([]byte, pad)...)
				add(append(k, c))
				add(append(append(bytes.Clone(k), c), 0))
			}
		}
		for range 300 { // the same prefix, then short random tails over few symbols (many ties)
			tail := make([]byte, rng.IntN(20))
			for i := range tail {
				tail[i] = []byte{0, 1, 'a', 0xff}[rng.IntN(4)]
			}
			add(append(bytes.Clone(base), tail...))
		}
	}
	for i := range 2000 { // record and byuser keys as the index writes them
		add(recordKey(nil, "contact", fmt.Sprintf("r-%08d", rng.IntN(1_000_000))))
		add(byUserKey(nil, fmt.Sprintf("u-%06d", i%37), "contact", fmt.Sprintf("loc-%d", rng.IntN(5)), fmt.Sprintf("r-%08d", rng.IntN(1_000_000))))
	}
	return keys
}

func randomKeys(rng *rand.Rand, n, maxLen int) [][]byte {
	seen := map[string]bool{}
	var keys [][]byte
	for len(keys) < n {
		k := make([]byte, rng.IntN(maxLen+1))
		for i := range k {
			k[i] = byte(rng.UintN(256))
		}
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// TestSortKeyedOrder checks the merge's sort (cached 8-byte words, ties broken further on)
// against bytes.Compare, the order bbolt keeps: a merge writes each chunk's keys in that order.
func TestSortKeyedOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 6))
	cases := []struct {
		name string
		keys [][]byte
	}{
		{"empty", nil},
		{"one empty key", [][]byte{{}}},
		{"two", [][]byte{[]byte("b"), []byte("a")}},
		{"trailing zeros", [][]byte{[]byte("a\x00\x00"), []byte("a"), []byte("a\x00"), {}, []byte("\x00"), []byte("a\x00\x00\x00\x00\x00\x00\x00\x00\x00")}},
		{"random short", randomKeys(rng, 5000, 12)},
		{"random long", randomKeys(rng, 2000, 600)},
		{"adversarial", adversarialKeys(rng)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 3 {
				in := slices.Clone(tc.keys)
				rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				if round == 1 {
					slices.SortFunc(in, func(a, b []byte) int { return bytes.Compare(b, a) }) // reversed
				}
				got := sortByKeyed(in)
				want := slices.Clone(in)
				slices.SortFunc(want, bytes.Compare)
				if len(got) != len(want) {
					t.Fatalf("round %d: %d keys out, %d in", round, len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("round %d: key %d of %d: got %q, want %q", round, i, len(want), got[i], want[i])
					}
				}
			}
		})
	}
}

// BenchmarkMergeSort sorts 250,000 keys shaped as a merge's (the record and byuser keys of
// random replication at 1,000,000 records) by whole keys (the code before) and by cached words.
func BenchmarkMergeSort(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	var keys [][]byte
	for len(keys) < 250_000 {
		var k []byte
		if rng.IntN(2) == 0 {
			k = recordKey(nil, "contact", fmt.Sprintf("r-%08d", rng.IntN(1_000_000)))
		} else {
			k = byUserKey(nil, fmt.Sprintf("u-%06d", rng.IntN(20_000)), "contact", fmt.Sprintf("loc-%03d", rng.IntN(100)), fmt.Sprintf("r-%08d", rng.IntN(1_000_000)))
		}
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, k)
		}
	}
	// The keys in one arena, in random order, 280 bytes apart, as in a merge's ~70 MB of delta
	// entries (a key, its value, the other changes of its batch).
	const slot = 280
	arena := make([]byte, len(keys)*slot)
	refs := make([]mref, len(keys))
	for i, k := range keys {
		refs[i] = mref{koff: uint32(i * slot), klen: uint16(len(k))}
		copy(arena[i*slot:], k)
	}
	key := func(r mref) []byte { return arena[r.koff : r.koff+uint32(r.klen)] }
	b.Run("whole-keys", func(b *testing.B) {
		s := make([]mref, len(refs))
		for b.Loop() {
			copy(s, refs)
			slices.SortFunc(s, func(a, b mref) int { return bytes.Compare(key(a), key(b)) })
		}
	})
	b.Run("cached-words", func(b *testing.B) {
		s := make([]keyedRef, len(refs))
		for b.Loop() {
			for i, r := range refs {
				s[i] = keyedRef{word: keyWord(key(r), 0), r: r}
			}
			sortKeyed(s, 0, key)
		}
	})
}

// TestLatestOrder checks what a merge writes (layer.latest over a real delta log, the keys read
// from their bbolt entries) against bytes.Compare, per bucket: adversarial keys spread over many
// batches, in the records and byuser buckets.
func TestLatestOrder(t *testing.T) {
	ix := openTest(t, Config{})
	rng := rand.New(rand.NewPCG(6, 17))
	var keys [][]byte
	for _, k := range adversarialKeys(rng) {
		if len(k) > 0 { // bbolt takes no empty key (sortKeyed's own test has one)
			keys = append(keys, k)
		}
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	buckets := []int{bRecords, bByUser}
	for start := 0; start < len(keys); start += 500 {
		mustUpdate(t, ix, func(w *WriteTx) error {
			for i, k := range keys[start:min(start+500, len(keys))] {
				if err := w.put(buckets[(start+i)%2], k, []byte("v")); err != nil {
					return err
				}
			}
			return nil
		})
	}
	lay := ix.cur.ov.Load().lay
	if n := int(lay.n.Load()); n != len(keys) {
		t.Fatalf("the overlay holds %d keys, want %d", n, len(keys))
	}
	err := ix.cur.db.View(func(tx *bolt.Tx) error {
		src := newGenTable(tx, lay)
		all, err := lay.latest(src)
		if err != nil {
			return err
		}
		if len(all) != len(keys) {
			return fmt.Errorf("latest gave %d keys, want %d", len(all), len(keys))
		}
		for i := 1; i < len(all); i++ {
			a, b := all[i-1], all[i]
			if a.bi > b.bi || (a.bi == b.bi && bytes.Compare(src.key(a), src.key(b)) >= 0) {
				return fmt.Errorf("position %d: bucket %d key %q before bucket %d key %q", i, a.bi, src.key(a), b.bi, src.key(b))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
