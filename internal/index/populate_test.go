//go:build linux

package index

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestPopulate: after Populate the whole file is mapped in this process (the Rss of index.db's
// mapping in /proc/self/smaps reaches the bytes Populate says it mapped, from a few pages after
// the open), the index reads the same; a cancelled context and a closed index are errors.
func TestPopulate(t *testing.T) {
	dir := t.TempDir()
	ix := openTest(t, Config{Dir: dir})
	if err := ix.ReplaceAll(7, func(l *Loader) error {
		if err := l.PutUser(user("u1", "loc1")); err != nil {
			return err
		}
		for i := range 20_000 {
			if err := l.PutRecord(contact(fmt.Sprintf("c%06d", i), "loc1", "u1")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ix = reopen(t, ix, Config{Dir: dir})
	before := mappedRss(t, ix.Path())

	n, err := ix.Populate(context.Background())
	if err != nil {
		t.Fatalf("Populate: %v", err)
	}
	fi, err := os.Stat(ix.Path())
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 || n > fi.Size() {
		t.Fatalf("Populate mapped %d bytes of a %d-byte file", n, fi.Size())
	}
	after := mappedRss(t, ix.Path())
	if after < n || after <= before {
		t.Fatalf("index.db's Rss: %d bytes after the open, %d after Populate (of %d bytes); want all of them", before, after, n)
	}
	if r, ok := getRecord(t, ix, TypeContact, "c019999"); !ok || r.Owner != "u1" {
		t.Fatalf("after Populate: record c019999 = %+v, %v", r, ok)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ix.Populate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Populate(cancelled) = %v, want context.Canceled", err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Populate(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Populate(closed) = %v, want ErrClosed", err)
	}
}

// mappedRss is the Rss, in bytes, of this process's mappings of path (/proc/self/smaps).
func mappedRss(tb testing.TB, path string) int64 {
	tb.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		tb.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var sum int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = fields[len(fields)-1] == path
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("smaps: %q: %v", line, err)
			}
			sum += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return sum
}
