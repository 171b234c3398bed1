package index

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestSubjectRecordsPaging(t *testing.T) {
	ix := openTest(t, Config{})
	// In l-1, u-1 owns the even ones of c-00 … c-09 and follows the odd ones; other records around.
	mustUpdate(t, ix, func(w *WriteTx) error {
		for i := range 10 {
			r := contact(ids("c-0", 10)[i], "l-1", "u-2", "u-1")
			if i%2 == 0 {
				r = contact(r.ID, "l-1", "u-1", "u-3")
			}
			if err := w.PutRecord(r); err != nil {
				return err
			}
		}
		for _, r := range []Record{
			contact("x-1", "l-2", "u-1"),          // other location
			contact("x-2", "l-1", "u-2", "u-3"),   // not u-1's
			contact("c-0", "l-1", "u-10", "u-11"), // "u-1" is a prefix of these users, "c-0" of u-1's ids
			{Type: TypeOpportunity, ID: "o-1", LocationID: "l-1", Owner: "u-1"},
		} {
			if err := w.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	})
	all := ids("c-0", 10) // c-00 … c-09
	mustView(t, ix, func(rt *ReadTx) error {
		for _, tc := range []struct {
			name      string
			user, loc string
			typ       string
			after     string
			limit     int
			want      []string
			wantNext  string
		}{
			{"all in one page", "u-1", "l-1", TypeContact, "", 100, all, ""},
			{"exactly the page size", "u-1", "l-1", TypeContact, "", 10, all, ""},
			{"first page", "u-1", "l-1", TypeContact, "", 3, all[:3], "c-02"},
			{"second page", "u-1", "l-1", TypeContact, "c-02", 3, all[3:6], "c-05"},
			{"last page", "u-1", "l-1", TypeContact, "c-05", 4, all[6:], ""},
			{"after an id not in the list", "u-1", "l-1", TypeContact, "c-045", 2, []string{"c-05", "c-06"}, "c-06"},
			{"after the last", "u-1", "l-1", TypeContact, "c-09", 3, []string{}, ""},
			{"after beyond everything", "u-1", "l-1", TypeContact, "zzz", 3, []string{}, ""},
			{"other location", "u-1", "l-2", TypeContact, "", 3, []string{"x-1"}, ""},
			{"other type", "u-1", "l-1", TypeOpportunity, "", 3, []string{"o-1"}, ""},
			{"follower", "u-3", "l-1", TypeContact, "", 100, []string{"c-00", "c-02", "c-04", "c-06", "c-08", "x-2"}, ""},
			{"prefix user", "u-10", "l-1", TypeContact, "", 100, []string{"c-0"}, ""},
			{"unknown user", "u-9", "l-1", TypeContact, "", 100, []string{}, ""},
			{"limit 1", "u-1", "l-1", TypeContact, "c-08", 1, []string{"c-09"}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, next, err := rt.SubjectRecords(tc.user, tc.typ, tc.loc, tc.after, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if got == nil || !slices.Equal(got, tc.want) || next != tc.wantNext {
					t.Errorf("got %q next %q, want %q next %q", got, next, tc.want, tc.wantNext)
				}
			})
		}
		if got := allSubjectRecords(t, rt, "u-1", TypeContact, "l-1", 1); !slices.Equal(got, all) {
			t.Errorf("paging by 1: %q", got)
		}
		for _, limit := range []int{0, -1} {
			if _, _, err := rt.SubjectRecords("u-1", TypeContact, "l-1", "", limit); err == nil {
				t.Errorf("limit %d accepted", limit)
			}
		}
		return nil
	})
	// The ids in JSON are an array, never null.
	mustView(t, ix, func(rt *ReadTx) error {
		got, _, _ := rt.SubjectRecords("nobody", TypeContact, "l-1", "", 5)
		if b, _ := json.Marshal(got); string(b) != "[]" {
			t.Errorf("empty result marshals as %s", b)
		}
		return nil
	})
}

func TestWaitForSeq(t *testing.T) {
	ix := openTest(t, Config{})
	setSeq := func(seq uint64) {
		mustUpdate(t, ix, func(w *WriteTx) error { return w.SetAppliedSeq(seq) })
	}
	setSeq(2)

	t.Run("already there", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // even with a done context
		for _, seq := range []uint64{0, 1, 2} {
			if err := ix.WaitForSeq(ctx, seq); err != nil {
				t.Errorf("WaitForSeq(%d) = %v", seq, err)
			}
		}
	})
	t.Run("times out", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := ix.WaitForSeq(ctx, 3); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitForSeq = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("woken by commits", func(t *testing.T) {
		done := make(chan error, 3)
		for range 3 {
			go func() { done <- ix.WaitForSeq(context.Background(), 5) }()
		}
		time.Sleep(10 * time.Millisecond)
		setSeq(3) // not enough
		setSeq(4)
		select {
		case err := <-done:
			t.Fatalf("returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		go setSeq(5)
		for range 3 {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("WaitForSeq = %v", err)
				}
			case <-time.After(time.Minute): // a hang, not a speed limit
				t.Fatal("not woken")
			}
		}
	})
	t.Run("woken by ReplaceAll", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- ix.WaitForSeq(context.Background(), 100) }()
		time.Sleep(10 * time.Millisecond)
		if err := ix.ReplaceAll(100, nil); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("WaitForSeq = %v", err)
		}
	})
	t.Run("woken by Close", func(t *testing.T) {
		ix2 := openTest(t, Config{})
		done := make(chan error, 1)
		go func() { done <- ix2.WaitForSeq(context.Background(), 1) }()
		time.Sleep(10 * time.Millisecond)
		_ = ix2.Close()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("WaitForSeq = %v, want ErrClosed", err)
			}
		case <-time.After(time.Minute): // a hang, not a speed limit
			t.Fatal("not woken by Close")
		}
	})
}

func TestViewErrorReturnedAsIs(t *testing.T) {
	ix := openTest(t, Config{})
	boom := errors.New("boom")
	if err := ix.View(func(*ReadTx) error { return boom }); err != boom {
		t.Errorf("View error = %v", err)
	}
}
