package index

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// damagedFixture writes an index of a few thousand records to a new directory, closes it and
// returns the path of its index.db and its used size (the meta page's high-water mark).
func damagedFixture(tb testing.TB) (path string, used int64) {
	tb.Helper()
	dir := tb.TempDir()
	ix, err := Open(Config{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	mustUpdate(tb, ix, func(w *WriteTx) error {
		for i := range 3000 {
			if err := w.PutRecord(contact(fmt.Sprint("c-", i), "l-1", fmt.Sprint("u-", i%50), "u-x")); err != nil {
				return err
			}
		}
		return w.SetAppliedSeq(5)
	})
	if _, err := ix.Backup(nopWriter{}, func(_ uint64, size int64) error { used = size; return nil }); err != nil {
		tb.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(dir, FileName), used
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// overwritePages fills the pages of bbolt's file at path for which pick says true with 0xff.
func overwritePages(tb testing.TB, path string, pick func(info string) bool) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		tb.Fatal(err)
	}
	var ids []int
	if err := db.View(func(tx *bolt.Tx) error {
		for id := 0; int64(id)*int64(db.Info().PageSize) < tx.Size(); id++ {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			if p != nil && pick(p.Type) {
				ids = append(ids, id)
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	size := db.Info().PageSize
	_ = db.Close()
	if len(ids) == 0 {
		tb.Fatal("no page to overwrite")
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, id := range ids {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, size), int64(id)*int64(size)); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestOpenRefusesDamagedFile: an index.db that is empty, truncated, or has broken meta or
// freelist pages is an error naming the file and wrapping ErrDamaged: never a panic, never an
// empty index, and the file is left as it was. (Before, a 0-byte file opened as an empty ready
// index, and a half-truncated one panicked in bbolt.)
func TestOpenRefusesDamagedFile(t *testing.T) {
	page := int64(os.Getpagesize())
	for _, tc := range []struct {
		name   string
		damage func(tb testing.TB, path string, used int64)
		want   string // in the error
		// readOnly: a read-only open must refuse it too (a broken freelist is not read by one).
		readOnly bool
	}{
		{"empty", func(tb testing.TB, path string, _ int64) { truncate(tb, path, 0) }, "empty (0 bytes)", true},
		{"a few bytes", func(tb testing.TB, path string, _ int64) { truncate(tb, path, 100) }, "", true},
		{"first page only", func(tb testing.TB, path string, _ int64) { truncate(tb, path, page) }, "", true},
		{"meta pages only", func(tb testing.TB, path string, _ int64) { truncate(tb, path, 2*page) }, "truncated", true},
		{"half", func(tb testing.TB, path string, used int64) { truncate(tb, path, used/2/page*page) }, "truncated", true},
		{"last page missing", func(tb testing.TB, path string, used int64) { truncate(tb, path, used-page) }, "truncated", true},
		{"both meta pages overwritten", func(tb testing.TB, path string, _ int64) {
			overwritePages(tb, path, func(typ string) bool { return typ == "meta" })
		}, "", true},
		{"page holding applied_seq overwritten", func(tb testing.TB, path string, _ int64) {
			overwritePageHolding(tb, path, []byte("applied_seq"))
		}, "reading it failed", true},
		{"freelist page overwritten", func(tb testing.TB, path string, _ int64) {
			overwritePages(tb, path, func(typ string) bool { return typ == "freelist" })
		}, "freelist", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, used := damagedFixture(t)
			if used < 16*page {
				t.Fatalf("the fixture uses only %d bytes", used)
			}
			tc.damage(t, path, used)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			modes := []bool{false}
			if tc.readOnly {
				modes = append(modes, true)
			}
			for _, ro := range modes {
				ix, err := Open(Config{Dir: filepath.Dir(path), ReadOnly: ro})
				if err == nil {
					_ = ix.Close()
					t.Fatalf("read-only %v: Open of a damaged file succeeded (applied_seq %d)", ro, ix.AppliedSeq())
				}
				t.Logf("read-only %v: %v", ro, err)
				if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) ||
					!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "backup") {
					t.Errorf("read-only %v: error %q, want ErrDamaged naming %s, %q and how to restore", ro, err, path, tc.want)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("the failed Open changed the damaged file (%d bytes, then %d)", len(before), len(after))
			}
			// The lock is let go: once the file is replaced by a good one, Open works.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			ix := openTest(t, Config{Dir: filepath.Dir(path), Timeout: 100 * time.Millisecond})
			if ix.AppliedSeq() != 0 {
				t.Errorf("new index at seq %d", ix.AppliedSeq())
			}
		})
	}
}

// overwritePageHolding fills the page of the file at path that holds needle with 0xff.
func overwritePageHolding(tb testing.TB, path string, needle []byte) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	at := bytes.Index(data, needle)
	if at < 0 {
		tb.Fatalf("%q is not in %s", needle, path)
	}
	page := os.Getpagesize()
	if err := os.WriteFile(path, append(append(data[:at/page*page:at/page*page], bytes.Repeat([]byte{0xff}, page)...),
		data[at/page*page+page:]...), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func truncate(tb testing.TB, path string, size int64) {
	tb.Helper()
	if err := os.Truncate(path, size); err != nil {
		tb.Fatal(err)
	}
}

// TestOpenNewIndexIsWholeAtOnce: a new index.db appears by rename, complete with its buckets, so
// a crash while creating it leaves no index.db (or a leftover index.db.loading, removed at the
// next Open), never the empty file Open refuses.
func TestOpenNewIndexIsWholeAtOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName+loadingSuffix), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	ix := openTest(t, Config{Dir: dir})
	if names := dirEntries(t, dir); !slices.Equal(names, liveFiles) {
		t.Errorf("data directory holds %q", names)
	}
	mustView(t, ix, func(rt *ReadTx) error {
		for _, name := range bucketNames {
			if rt.tx.Bucket(name) == nil {
				t.Errorf("bucket %q missing", name)
			}
		}
		return nil
	})
}
