package index

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestMissingDeltaEntryFailsClosed: an overlay version whose delta entry is gone (the overlay
// and the delta log disagree: a bug or a damaged file) must fail the read, not fall back to the
// main bucket's older value: a decision would see a follower or owner the index no longer has.
func TestMissingDeltaEntryFailsClosed(t *testing.T) {
	ix := openTest(t, Config{Dir: t.TempDir()})
	// The first batch reaches the main buckets (merged), the second stays in the overlay.
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-1", "l-1")); err != nil {
			return err
		}
		return w.PutRecord(contact("c-1", "l-1", "u-1", "u-2"))
	})
	forceMerge(t, ix, -1)
	mustUpdate(t, ix, func(w *WriteTx) error {
		if err := w.PutUser(user("u-1", "l-2")); err != nil {
			return err
		}
		return w.RemoveFollower(TypeContact, "c-1", "u-2")
	})
	// Drop the second batch's delta entry behind the overlay's back.
	if err := ix.cur.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDelta)
		k, _ := b.Cursor().Last()
		_, nested, ok := parseDeltaKey(k)
		if !ok {
			return errors.New("no delta entry")
		}
		return deleteDelta(b, k, nested)
	}); err != nil {
		t.Fatal(err)
	}
	reads := []struct {
		name string
		read func(*ReadTx) error
	}{
		{"UserJSON", func(rt *ReadTx) error { _, err := rt.UserJSON("u-1"); return err }},
		{"RecordJSON", func(rt *ReadTx) error { _, err := rt.RecordJSON(TypeContact, "c-1"); return err }},
		{"Record, error ignored by the callback", func(rt *ReadTx) error { _, _, _ = rt.Record(TypeContact, "c-1"); return nil }},
	}
	for _, r := range reads {
		t.Run(r.name, func(t *testing.T) {
			err := ix.View(r.read)
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("View = %v, want an error wrapping ErrDamaged", err)
			}
		})
	}
	t.Run("Update", func(t *testing.T) {
		err := ix.Update(func(w *WriteTx) error {
			_, _, _ = w.Record(TypeContact, "c-1")
			return nil
		})
		if !errors.Is(err, ErrDamaged) {
			t.Fatalf("Update = %v, want an error wrapping ErrDamaged", err)
		}
	})
}
