package index

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"
)

// keyedRef is a merge's reference to a key (mref) with 8 bytes of the key cached beside it:
// bytes [depth, depth+8) of the key, zero-padded, read big-endian (keyWord).
type keyedRef struct {
	word uint64
	r    mref
}

// keyWord returns bytes [d, d+8) of key as a big-endian integer, the bytes past the key's end
// read as zeros. Two keys whose first d bytes are equal compare by their words as bytes.Compare
// compares them, except that equal words leave a tie (the next bytes, or trailing zeros against
// a shorter key, decide).
func keyWord(key []byte, d int) uint64 {
	if d >= len(key) {
		return 0
	}
	k := key[d:]
	if len(k) >= 8 {
		return binary.BigEndian.Uint64(k)
	}
	var b [8]byte
	copy(b[:], k)
	return binary.BigEndian.Uint64(b[:])
}

// sortKeyed sorts s into the bytes.Compare order of the keys (key gives a reference's key),
// where every key of s has the same first depth bytes and s[i].word is keyWord(key, depth): an
// MSD sort 8 bytes at a time, comparing integers held beside the references and reading the keys
// again (at random, in the delta log's memory map) only for the runs the words leave tied, once
// per 8 bytes. The keys of a merge share long prefixes (a record key begins with its type, a
// byuser key with its user), which a comparison of whole keys reads again and again
// (BENCHMARKS.md, "Random replication").
func sortKeyed(s []keyedRef, depth int, key func(mref) []byte) {
	sortKeyedBuf(s, make([]keyedRef, len(s)), depth, key)
}

// sortKeyedBuf is sortKeyed with buf (len(buf) >= len(s)) as the radix sort's scratch space.
func sortKeyedBuf(s, buf []keyedRef, depth int, key func(mref) []byte) {
	for len(s) > 1 {
		sortWords(s, buf)
		// The runs of equal words: every run but the longest is sorted by a recursive call,
		// the longest by this loop, so the recursion's depth stays logarithmic in len(s).
		longest, li := 0, 0
		for i := 0; i < len(s); {
			j := i + 1
			for j < len(s) && s[j].word == s[i].word {
				j++
			}
			if j-i > longest {
				longest, li = j-i, i
			}
			i = j
		}
		for i := 0; i < len(s); {
			j := i + 1
			for j < len(s) && s[j].word == s[i].word {
				j++
			}
			if i != li && j-i > 1 && nextWords(s[i:j], depth, key) {
				sortKeyedBuf(s[i:j], buf, depth+8, key)
			}
			i = j
		}
		s = s[li : li+longest]
		if !nextWords(s, depth, key) {
			return
		}
		depth += 8
	}
}

// nextWords loads into s the words of its keys at depth+8 and reports true, or, when no key of s
// is longer than depth+8 bytes (they then differ at most by trailing zeros), sorts s by whole
// keys and reports false.
func nextWords(s []keyedRef, depth int, key func(mref) []byte) bool {
	if len(s) < 2 {
		return false
	}
	longer := false
	for i := range s {
		if int(s[i].r.klen) > depth+8 {
			longer = true
			break
		}
	}
	if !longer {
		slices.SortFunc(s, func(a, b keyedRef) int { return bytes.Compare(key(a.r), key(b.r)) })
		return false
	}
	for i := range s {
		s[i].word = keyWord(key(s[i].r), depth+8)
	}
	return true
}

// radixMin is the length from which sortWords sorts by radix rather than by comparisons.
const radixMin = 256

// sortWords sorts s by word: an LSD radix sort a byte at a time through buf (len(buf) >=
// len(s)), skipping the bytes every word of s shares, or a comparison sort when s is short.
func sortWords(s, buf []keyedRef) {
	if len(s) < radixMin {
		slices.SortFunc(s, func(a, b keyedRef) int { return cmp.Compare(a.word, b.word) })
		return
	}
	var counts [8][256]int
	for i := range s {
		w := s[i].word
		for b := range 8 {
			counts[b][byte(w>>(8*b))]++
		}
	}
	src, dst := s, buf[:len(s)]
	for b := range 8 {
		c := &counts[b]
		if c[byte(src[0].word>>(8*b))] == len(s) {
			continue // every word has this byte
		}
		sum := 0
		for v := range c {
			c[v], sum = sum, sum+c[v]
		}
		shift := 8 * b
		for _, e := range src {
			v := byte(e.word >> shift)
			dst[c[v]] = e
			c[v]++
		}
		src, dst = dst, src
	}
	if &src[0] != &s[0] {
		copy(s, src)
	}
}
