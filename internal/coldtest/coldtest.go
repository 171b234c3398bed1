// Package coldtest helps benchmarks measure code with cold CPU caches, as a
// server's request runs after net/http, the kernel and the load generator
// have evicted its code and data (BENCHMARKS.md, "Session 5: the decision
// with its caches cold"), and reports the process's CPU time per operation
// (ReportCPU, ProcessCPU). Only tests and benchmarks import it.
package coldtest

// Evictor reads memory between two measured calls, at random cache lines
// of Buf, so that the next call finds its data in a farther cache.
type Evictor struct {
	Buf  []byte
	Seed uint64 // the random sequence's state; not 0
	Sum  uint64 // what was read, for the caller to keep alive
}

// Next returns the next number of a xorshift64 sequence.
func (ev *Evictor) Next() uint64 {
	ev.Seed ^= ev.Seed << 13
	ev.Seed ^= ev.Seed >> 7
	ev.Seed ^= ev.Seed << 17
	return ev.Seed
}

// Touch reads n bytes' worth of cache lines of Buf, at random lines. It is
// not inlined, so that a profile (callgrind) tells its cost apart.
//
//go:noinline
func (ev *Evictor) Touch(n int) {
	lines := uint64(len(ev.Buf) / 64)
	for range n / 64 {
		ev.Sum += uint64(ev.Buf[(ev.Next()%lines)*64])
	}
}
