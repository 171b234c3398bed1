package index

import (
	"context"
	"fmt"
	"os"
)

// populateChunk is how much of the file one read transaction of Populate maps: a writer that
// must grow bbolt's mapping waits for at most one chunk.
const populateChunk = 64 << 20

// Populate maps the whole index file into the process's page tables ahead of the requests, chunk
// by chunk, each inside a read transaction (so that bbolt does not remap the file meanwhile). It
// reads each chunk with read(2) first, which fills the page cache from disk in large requests:
// on a cold 5.5 GB file here ~500 MB/s, where the faults of MADV_POPULATE_READ alone (or after
// MADV_WILLNEED) read 20–36 MB/s. It returns the bytes mapped. A
// decision then takes no page fault on the file, and the kernel's reclaim of page-cache pages no
// process maps (which drops most of a 10,000,000-record index that sat a minute unread on the
// benchmark's machine) leaves the index alone. A remap after the file grows (replication) maps
// again only what the requests touch. See BENCHMARKS.md, "Session 10: the 10,000,000-record
// tail", and docs/operations.md. Linux 5.14 or later (MADV_POPULATE_READ); elsewhere an error
// that nothing was mapped.
func (ix *Index) Populate(ctx context.Context) (int64, error) {
	f, err := os.Open(ix.path)
	if err != nil {
		return 0, fmt.Errorf("index: populate: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		var size int64
		err := ix.view(func(t *ReadTx) error {
			if size = t.tx.Size(); off >= size {
				return nil
			}
			n := min(populateChunk, size-off)
			for o := off; o < off+n; o += int64(len(buf)) {
				if _, err := f.ReadAt(buf[:min(int64(len(buf)), off+n-o)], o); err != nil {
					return fmt.Errorf("index: populate: read %s at %d: %w", ix.path, o, err)
				}
			}
			if err := populateRead(t.tx.DB().Info().Data+uintptr(off), uintptr(n)); err != nil {
				return fmt.Errorf("index: populate %s at %d: %w", ix.path, off, err)
			}
			off += n
			return nil
		}, false)
		if err != nil || off >= size {
			return off, err
		}
	}
}
