package index

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
)

// The sorted runs of ReplaceAll (see snapshot.go for the whole method): rows are sorted in
// memory-bounded runs spilled to one temporary file, then merged in key order.

// spill is the append-only file holding the sorted runs; runs are read back with ReadAt.
type spill struct {
	f    *os.File
	size int64
}

func (s *spill) Write(p []byte) (int, error) {
	n, err := s.f.WriteAt(p, s.size)
	s.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("index: snapshot: write spill file: %w", err)
	}
	return n, nil
}

type section struct{ off, n int64 }

type runEntry struct {
	pfx        uint64 // kind and the first 7 key bytes, big-endian, zero-padded: a cheap first compare
	off        uint32 // of the key in arena; the value follows it
	klen, vlen uint32
}

func entryPrefix(kind byte, key []byte) uint64 {
	var b [8]byte
	b[0] = kind
	copy(b[1:], key)
	return binary.BigEndian.Uint64(b[:])
}

// runWriter buffers entries and writes them as sorted runs to the spill file.
type runWriter struct {
	sp    *spill
	limit int // bytes of keys and values buffered before a run is written
	arena []byte
	ents  []runEntry
	runs  []section
	bw    *bufio.Writer
}

func newRunWriter(sp *spill, limit int) *runWriter {
	return &runWriter{sp: sp, limit: limit, bw: bufio.NewWriterSize(sp, runReadBuffer)}
}

func (rw *runWriter) add(kind byte, key, val []byte) error {
	if rw.arena == nil {
		rw.arena = make([]byte, 0, rw.limit+4<<10)
	}
	rw.ents = append(rw.ents, runEntry{pfx: entryPrefix(kind, key), off: uint32(len(rw.arena)),
		klen: uint32(len(key)), vlen: uint32(len(val))})
	rw.arena = append(rw.arena, key...)
	rw.arena = append(rw.arena, val...)
	if len(rw.arena) >= rw.limit {
		return rw.flush()
	}
	return nil
}

// flush sorts the buffered entries by (kind, key), keeping the order of equal keys (off grows
// with arrival), and writes them as one run: kind, uvarint key length, key, uvarint value length,
// value.
func (rw *runWriter) flush() error {
	if len(rw.ents) == 0 {
		return nil
	}
	a := rw.arena
	slices.SortFunc(rw.ents, func(x, y runEntry) int {
		if x.pfx != y.pfx {
			if x.pfx < y.pfx {
				return -1
			}
			return 1
		}
		if c := bytes.Compare(a[x.off:x.off+x.klen], a[y.off:y.off+y.klen]); c != 0 {
			return c
		}
		return int(x.off) - int(y.off)
	})
	start := rw.sp.size
	var hdr [binary.MaxVarintLen64 + 1]byte
	for _, e := range rw.ents {
		hdr[0] = byte(e.pfx >> 56)
		n := binary.PutUvarint(hdr[1:], uint64(e.klen))
		_, _ = rw.bw.Write(hdr[:1+n])
		_, _ = rw.bw.Write(a[e.off : e.off+e.klen])
		n = binary.PutUvarint(hdr[:], uint64(e.vlen))
		_, _ = rw.bw.Write(hdr[:n])
		_, _ = rw.bw.Write(a[e.off+e.klen : e.off+e.klen+e.vlen])
	}
	if err := rw.bw.Flush(); err != nil {
		return err
	}
	rw.runs = append(rw.runs, section{off: start, n: rw.sp.size - start})
	rw.arena = rw.arena[:0]
	rw.ents = rw.ents[:0]
	return nil
}

// runReader reads one run's entries in order.
type runReader struct {
	r    *bufio.Reader
	idx  int // run number: among equal keys, the later run was loaded later
	kind byte
	key  []byte
	val  []byte
}

func (rr *runReader) next() (bool, error) {
	kind, err := rr.r.ReadByte()
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rr.kind = kind
	if rr.key, err = readChunk(rr.r, rr.key); err != nil {
		return false, err
	}
	if rr.val, err = readChunk(rr.r, rr.val); err != nil {
		return false, err
	}
	return true, nil
}

func readChunk(r *bufio.Reader, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("index: snapshot: corrupt spill file: %w", err)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("index: snapshot: corrupt spill file: %w", err)
	}
	return buf, nil
}

// merger merges sorted runs into one sorted stream (ties: earlier run first).
type merger struct {
	h    mergeHeap
	last *runReader // popped by the previous next(); advanced at the start of the next one
}

type mergeHeap []*runReader

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	if c := bytes.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.idx < b.idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(*runReader)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newMerger(sp *spill, runs []section) (*merger, error) {
	m := &merger{}
	for i, s := range runs {
		rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(sp.f, s.off, s.n), runReadBuffer), idx: i}
		ok, err := rr.next()
		if err != nil {
			return nil, err
		}
		if ok {
			m.h = append(m.h, rr)
		}
	}
	heap.Init(&m.h)
	return m, nil
}

// next returns the smallest entry; key and val are valid until the following call.
func (m *merger) next() (kind byte, key, val []byte, ok bool, err error) {
	if rr := m.last; rr != nil {
		m.last = nil
		more, err := rr.next()
		if err != nil {
			return 0, nil, nil, false, err
		}
		if more {
			heap.Push(&m.h, rr)
		}
	}
	if len(m.h) == 0 {
		return 0, nil, nil, false, nil
	}
	rr := heap.Pop(&m.h).(*runReader)
	m.last = rr
	return rr.kind, rr.key, rr.val, true, nil
}
