package index

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// deltaLayouts lists the delta log's keys of ix's file: "flat" or "nested" per entry, in order.
func deltaLayouts(tb testing.TB, ix *Index) []string {
	tb.Helper()
	var out []string
	if err := ix.cur.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDelta).ForEach(func(k, v []byte) error {
			_, nested, ok := parseDeltaKey(k)
			switch {
			case !ok:
				return fmt.Errorf("delta key %x", k)
			case nested && v == nil:
				out = append(out, "nested")
			case !nested && v != nil:
				out = append(out, "flat")
			default:
				return fmt.Errorf("delta key %x: nested %v, value %q", k, nested, v)
			}
			return nil
		})
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

// recordsOf reads every record through ForEachRecord (the snapshot export's read), as JSON.
func recordsOf(tb testing.TB, ix *Index) []string {
	tb.Helper()
	var out []string
	mustView(tb, ix, func(rt *ReadTx) error {
		return rt.ForEachRecord(func(r Record) error {
			js, err := appendRecordJSON(nil, &r)
			out = append(out, string(js))
			return err
		})
	})
	return out
}

// TestDeltaLogUpgrade follows a file whose delta log was written flat (code before session 9 of
// issue 17, tuning.flatDelta) through an upgrade: opened with its flat entries in the overlay,
// replicated into (nested entries after the flat ones), backed up, reopened (the overlay rebuilt
// from both layouts), merged (both deleted), snapshotted; the same reads as a file written flat
// throughout, at every step.
func TestDeltaLogUpgrade(t *testing.T) {
	batch := func(ix *Index, i int) {
		t.Helper()
		mustUpdate(t, ix, func(w *WriteTx) error {
			if err := w.AddFollower(TypeContact, fmt.Sprint("c-", i%4), fmt.Sprint("u-", i)); err != nil {
				return err
			}
			if err := w.SetOwner(TypeContact, fmt.Sprint("c-", (i+1)%4), fmt.Sprint("u-", i)); err != nil {
				return err
			}
			return w.SetAppliedSeq(uint64(10 + i))
		})
	}
	open := func(dir string, flat bool) *Index {
		t.Helper()
		tune := defaultTuning()
		tune.flatDelta = flat
		ix, err := openTuned(Config{Dir: dir}, tune)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ix.Close() })
		return ix
	}
	load := func(ix *Index) {
		t.Helper()
		if err := ix.ReplaceAll(1, func(l *Loader) error {
			for i := range 4 {
				if err := l.PutRecord(contact(fmt.Sprint("c-", i), "l-1", "u-a", "u-b")); err != nil {
					return err
				}
			}
			return l.PutUser(user("u-a", "l-1"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The reference: the same batches, flat throughout.
	ref := open(t.TempDir(), true)
	load(ref)
	// The file under test: written flat, then upgraded.
	dir := t.TempDir()
	ix := open(dir, true)
	load(ix)
	step := func(name string) {
		t.Helper()
		if got, want := recordsOf(t, ix), recordsOf(t, ref); !slices.Equal(got, want) {
			t.Fatalf("%s: records\n%q, want\n%q", name, got, want)
		}
		if got, want := ix.AppliedSeq(), ref.AppliedSeq(); got != want {
			t.Fatalf("%s: applied_seq %d, want %d", name, got, want)
		}
		for _, u := range []string{"u-0", "u-3", "u-5", "u-a"} {
			var got, want []string
			mustView(t, ix, func(rt *ReadTx) (err error) {
				got, _, err = rt.SubjectRecords(u, TypeContact, "l-1", "", 10)
				return err
			})
			mustView(t, ref, func(rt *ReadTx) (err error) {
				want, _, err = rt.SubjectRecords(u, TypeContact, "l-1", "", 10)
				return err
			})
			if !slices.Equal(got, want) {
				t.Fatalf("%s: SubjectRecords(%s) = %q, want %q", name, u, got, want)
			}
		}
	}
	for i := range 3 {
		batch(ix, i)
		batch(ref, i)
	}
	if got, want := deltaLayouts(t, ix), []string{"flat", "flat", "flat"}; !slices.Equal(got, want) {
		t.Fatalf("written flat: delta log %q, want %q", got, want)
	}
	step("written flat")

	// The upgrade: today's code opens the file as it is.
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	ix = open(dir, false)
	step("opened by the new code")
	for i := 3; i < 5; i++ {
		batch(ix, i)
		batch(ref, i)
	}
	if got, want := deltaLayouts(t, ix), []string{"flat", "flat", "flat", "nested", "nested"}; !slices.Equal(got, want) {
		t.Fatalf("after the upgrade: delta log %q, want %q", got, want)
	}
	step("replicated into")

	// A backup copies both layouts; the copy opens with the same state and applied_seq.
	var buf bytes.Buffer
	var seq uint64
	if _, err := ix.Backup(&buf, func(s uint64, _ int64) error { seq = s; return nil }); err != nil {
		t.Fatal(err)
	}
	if seq != ref.AppliedSeq() {
		t.Fatalf("Backup: applied_seq %d, want %d", seq, ref.AppliedSeq())
	}
	bdir := t.TempDir()
	if err := os.WriteFile(filepath.Join(bdir, FileName), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	bix := open(bdir, false)
	if got, want := recordsOf(t, bix), recordsOf(t, ref); !slices.Equal(got, want) {
		t.Fatalf("the backup's records\n%q, want\n%q", got, want)
	}

	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	ix = open(dir, false)
	step("reopened with both layouts")

	// A merge stopped after its first chunk, then a whole one: both layouts deleted.
	ix.mergeChunk = 2
	forceMerge(t, ix, 0)
	step("half merged")
	forceMerge(t, ix, -1)
	if got := deltaLayouts(t, ix); len(got) != 0 {
		t.Fatalf("after the merge: delta log %q, want empty", got)
	}
	step("merged")
	batch(ix, 5)
	batch(ref, 5)
	step("replicated after the merge")
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	ix = open(dir, false)
	step("reopened after the merge")
	load(ix)
	load(ref)
	step("snapshot loaded")
}

// TestDeltaEntryWrittenOnce checks what the nested layout is for: a batch's commit writes its
// entry once, where a flat entry's commit rewrote the entries before it that share its leaf
// (delta.go).
func TestDeltaEntryWrittenOnce(t *testing.T) {
	for _, flat := range []bool{false, true} {
		t.Run(fmt.Sprint("flat=", flat), func(t *testing.T) {
			tune := defaultTuning()
			tune.flatDelta, tune.statistics = flat, true
			ix, err := openTuned(Config{Dir: t.TempDir()}, tune)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ix.Close() })
			if err := ix.ReplaceAll(1, func(l *Loader) error {
				for i := range 2000 {
					if err := l.PutRecord(contact(fmt.Sprintf("c-%05d", i), "l-1", "u-a", "u-b")); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var entry, written int64
			for b := range 12 {
				before := pageAlloc(ix)
				mustUpdate(t, ix, func(w *WriteTx) error {
					for i := range 500 {
						if err := w.AddFollower(TypeContact, fmt.Sprintf("c-%05d", b*100+i), fmt.Sprint("u-", b)); err != nil {
							return err
						}
					}
					return nil
				})
				after := pageAlloc(ix)
				if b >= 4 { // the log's leaf has filled up
					written += after - before
					entry += int64(len(getDeltaT(t, ix, ix.cur.ov.Load().gen)))
				}
			}
			ratio := float64(written) / float64(entry)
			t.Logf("flat=%v: %d bytes of pages written for %d bytes of entries (%.2f)", flat, written, entry, ratio)
			if !flat && ratio > 1.5 {
				t.Errorf("nested: %.2f bytes of pages per byte of entry, want at most 1.5", ratio)
			}
			if flat && ratio < 2.5 {
				t.Errorf("flat: %.2f bytes of pages per byte of entry: the test no longer shows what nesting saves", ratio)
			}
		})
	}
}

func getDeltaT(tb testing.TB, ix *Index, gen uint64) []byte {
	tb.Helper()
	var n []byte
	if err := ix.cur.db.View(func(tx *bolt.Tx) error {
		n = bytes.Clone(getDelta(tx.Bucket(bucketDelta), gen))
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	if n == nil {
		tb.Fatalf("no delta entry %d", gen)
	}
	return n
}

// pageAlloc is the bytes of pages ix's file allocated (written) since Open (tuning.statistics).
func pageAlloc(ix *Index) int64 {
	st := ix.cur.db.Stats()
	return st.TxStats.GetPageAlloc()
}
