package index

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestBackupRestores(t *testing.T) {
	ix, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if err := ix.Update(func(w *WriteTx) error {
		if err := w.PutUser(User{ID: "u-1", Role: "user", LocationIDs: []string{"l"}, ContactsEnabled: true}); err != nil {
			return err
		}
		if err := w.PutRecord(Record{Type: TypeContact, ID: "c-1", LocationID: "l", Owner: "u-1", Followers: []string{"u-2"}}); err != nil {
			return err
		}
		return w.SetAppliedSeq(7)
	}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var gotSeq uint64
	var gotSize int64
	n, err := ix.Backup(&buf, func(seq uint64, size int64) error { gotSeq, gotSize = seq, size; return nil })
	if err != nil || n != int64(buf.Len()) || n != gotSize || gotSeq != 7 {
		t.Fatalf("backup: n %d, len %d, size %d, seq %d, err %v", n, buf.Len(), gotSize, gotSeq, err)
	}
	// A write after the backup is not in it.
	if err := ix.Update(func(w *WriteTx) error { return w.SetAppliedSeq(8) }); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	restored, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if restored.AppliedSeq() != 7 || restored.Counts().Users != 1 || restored.Counts().Records[TypeContact] != 1 {
		t.Fatalf("restored: seq %d, counts %+v", restored.AppliedSeq(), restored.Counts())
	}
	err = restored.View(func(tx *ReadTx) error {
		r, ok, err := tx.Record(TypeContact, "c-1")
		if err != nil || !ok || r.Owner != "u-1" || len(r.Followers) != 1 {
			t.Fatalf("restored record %+v %v %v", r, ok, err)
		}
		ids, _, err := tx.SubjectRecords("u-2", TypeContact, "l", "", 10)
		if err != nil || len(ids) != 1 {
			t.Fatalf("restored reverse index: %v %v", ids, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
