package index

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

func TestOpenCreatesDirFileAndBuckets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	ix := openTest(t, Config{Dir: dir})
	if want := filepath.Join(dir, FileName); ix.Path() != want {
		t.Fatalf("Path() = %q, want %q", ix.Path(), want)
	}
	if _, err := os.Stat(ix.Path()); err != nil {
		t.Fatal(err)
	}
	mustView(t, ix, func(rt *ReadTx) error {
		for _, name := range bucketNames {
			if rt.tx.Bucket(name) == nil {
				t.Errorf("bucket %q missing", name)
			}
		}
		return nil
	})
	if got := ix.AppliedSeq(); got != 0 {
		t.Errorf("AppliedSeq() of a new index = %d", got)
	}
	if c := ix.Counts(); !equalCounts(c, newCounts()) {
		t.Errorf("Counts() of a new index = %+v", c)
	}
}

func TestOpenConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"negative timeout", Config{Dir: t.TempDir(), Timeout: -time.Second}},
		{"negative max followers", Config{Dir: t.TempDir(), MaxFollowers: -1}},
		{"read-only, no file", Config{Dir: t.TempDir(), ReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ix, err := Open(tc.cfg); err == nil {
				_ = ix.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}
func TestPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	ix, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-1", "l-1")); err != nil {
			return err
		}
		if err := w.PutRecord(contact("c-1", "l-1", "u-1", "u-2")); err != nil {
			return err
		}
		return w.SetAppliedSeq(42)
	})
	var want *state
	mustView(t, ix, func(rt *ReadTx) error { want = readState(t, rt); return nil })
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	ix = openTest(t, Config{Dir: dir})
	if ix.AppliedSeq() != 42 {
		t.Errorf("AppliedSeq after reopen = %d", ix.AppliedSeq())
	}
	if !equalCounts(ix.Counts(), want.counts()) {
		t.Errorf("Counts after reopen = %+v", ix.Counts())
	}
	mustView(t, ix, func(rt *ReadTx) error {
		compareState(t, readState(t, rt), want)
		return nil
	})
}

func TestClose(t *testing.T) {
	ix, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var stale *ReadTx
	mustView(t, ix, func(rt *ReadTx) error { stale = rt; return nil })
	if _, err := stale.UserJSON("u-1"); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadTx used after View: %v, want ErrClosed", err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"View":       ix.View(func(*ReadTx) error { return nil }),
		"Update":     ix.Update(func(*WriteTx) error { return nil }),
		"ReplaceAll": ix.ReplaceAll(1, nil),
		"WaitForSeq": ix.WaitForSeq(context.Background(), 1),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if err := ix.WaitForSeq(context.Background(), 0); err != nil {
		t.Errorf("WaitForSeq(0) after Close: %v (already satisfied)", err)
	}
}

// bbolt takes an exclusive flock for a read-write open and a shared one for a ReadOnly open; they
// conflict, so a read-only open beside a live writer times out. What works: read-only once the
// writer has closed, several read-only opens together, and a writer waiting for them to go.
func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, w, func(tx *WriteTx) error {
		if err := tx.PutUser(user("u-1", "l-1")); err != nil {
			return err
		}
		if err := tx.PutRecord(contact("c-1", "l-1", "u-1")); err != nil {
			return err
		}
		return tx.SetAppliedSeq(7)
	})

	t.Run("beside a live writer: lock timeout", func(t *testing.T) {
		start := time.Now()
		ro, err := Open(Config{Dir: dir, ReadOnly: true, Timeout: 200 * time.Millisecond})
		if err == nil {
			_ = ro.Close()
			t.Fatal("read-only open beside a writer succeeded; update the package documentation")
		}
		t.Log(err)
		if !errors.Is(err, berrors.ErrTimeout) {
			t.Errorf("error = %v, want bbolt's ErrTimeout", err)
		}
		t.Logf("gave up after %s (Timeout 200ms)", time.Since(start).Round(time.Millisecond)) // not a speed requirement
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("after the writer closed", func(t *testing.T) {
		ro1 := openTest(t, Config{Dir: dir, ReadOnly: true})
		ro2 := openTest(t, Config{Dir: dir, ReadOnly: true, Timeout: 200 * time.Millisecond})
		for _, ro := range []*Index{ro1, ro2} {
			if ro.AppliedSeq() != 7 || ro.Counts().Users != 1 {
				t.Errorf("seq %d counts %+v", ro.AppliedSeq(), ro.Counts())
			}
			mustView(t, ro, func(rt *ReadTx) error {
				if _, ok, err := rt.Record(TypeContact, "c-1"); !ok || err != nil {
					t.Errorf("Record: %v %v", ok, err)
				}
				return nil
			})
			if err := ro.Update(func(*WriteTx) error { return nil }); !errors.Is(err, ErrReadOnly) {
				t.Errorf("Update: %v, want ErrReadOnly", err)
			}
			if err := ro.ReplaceAll(1, nil); !errors.Is(err, ErrReadOnly) {
				t.Errorf("ReplaceAll: %v, want ErrReadOnly", err)
			}
		}
		// A writer cannot open while readers hold the shared lock.
		if w2, err := Open(Config{Dir: dir, Timeout: 200 * time.Millisecond}); err == nil {
			_ = w2.Close()
			t.Error("read-write open beside read-only opens succeeded")
		}
	})

	t.Run("file without buckets reads as empty", func(t *testing.T) {
		dir := t.TempDir()
		db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		ro := openTest(t, Config{Dir: dir, ReadOnly: true})
		mustView(t, ro, func(rt *ReadTx) error {
			if v, err := rt.UserJSON("u"); v != nil || err != nil {
				t.Errorf("UserJSON: %q %v", v, err)
			}
			if v, err := rt.RecordJSON("contact", "c"); v != nil || err != nil {
				t.Errorf("RecordJSON: %q %v", v, err)
			}
			if ids, next, err := rt.SubjectRecords("u", "contact", "l", "", 5); len(ids) != 0 || next != "" || err != nil {
				t.Errorf("SubjectRecords: %q %q %v", ids, next, err)
			}
			if c := rt.Counts(); !equalCounts(c, newCounts()) || rt.AppliedSeq() != 0 {
				t.Errorf("Counts %+v seq %d", c, rt.AppliedSeq())
			}
			checkReverseIndex(t, rt)
			return nil
		})
	})
}
