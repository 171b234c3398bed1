package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// liveFiles are the names in the data directory of an open index, sorted.
var liveFiles = []string{LockFileName, FileName}

// dirEntries lists the names in dir.
func dirEntries(tb testing.TB, dir string) []string {
	tb.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestReplaceAll(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		runBuffer, bulkCommit int
	}{
		{"default sizes", 0, 0},
		{"one entry per run, commit every put", 1, 1},
		{"small runs and commits", 100, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ix := openTest(t, Config{Dir: dir})
			if tc.runBuffer > 0 {
				ix.runBuffer, ix.bulkCommit = tc.runBuffer, tc.bulkCommit
			}
			mustUpdate(t, ix, func(w *WriteTx) error {
				if err := w.PutUser(user("old-user", "l-1")); err != nil {
					return err
				}
				if err := w.PutRecord(contact("old-rec", "l-1", "old-user", "u-1")); err != nil {
					return err
				}
				return w.SetAppliedSeq(50)
			})
			want := newState()
			want.Seq = 7 // lower than before: a snapshot sets applied_seq, whatever it was
			err := ix.ReplaceAll(7, func(l *Loader) error {
				rows := []any{
					user("u-2", "l-1"),
					contact("c-1", "l-1", "u-1", "u-2", "u-1", "u-3", "u-2"),
					user("u-1", "l-1"),
					contact("c-2", "l-2", "u-2", "u-1"),
					Record{Type: TypeOpportunity, ID: "c-1", LocationID: "l-1", Owner: "", Followers: []string{"u-1"}, ContactID: "c-1"},
					User{ID: "u-2", Role: "admin", LocationIDs: []string{"l-2"}}, // replaces the first u-2
					contact("c-2", "l-1", "u-3", "u-3", "u-2"),                   // replaces the first c-2
					contact("c-3", "l-1", "u-4"),
				}
				for _, r := range rows {
					var err error
					switch r := r.(type) {
					case User:
						err = l.PutUser(r)
					case Record:
						err = l.PutRecord(r)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want.Users["u-1"] = user("u-1", "l-1")
			want.Users["u-2"] = User{ID: "u-2", Role: "admin", LocationIDs: []string{"l-2"}}
			for _, r := range []Record{
				contact("c-1", "l-1", "u-1", "u-2", "u-3"),
				{Type: TypeOpportunity, ID: "c-1", LocationID: "l-1", Followers: []string{"u-1"}, ContactID: "c-1"},
				contact("c-2", "l-1", "u-3", "u-2"),
				contact("c-3", "l-1", "u-4"),
			} {
				want.Records[string(recordKey(nil, r.Type, r.ID))] = r
			}
			check := func(ix *Index) {
				t.Helper()
				if ix.AppliedSeq() != 7 || !equalCounts(ix.Counts(), want.counts()) {
					t.Errorf("cached seq %d counts %+v, want 7 %+v", ix.AppliedSeq(), ix.Counts(), want.counts())
				}
				mustView(t, ix, func(rt *ReadTx) error {
					compareState(t, readState(t, rt), want)
					checkReverseIndex(t, rt)
					ids, _, err := rt.SubjectRecords("u-2", TypeContact, "l-1", "", 10)
					if err != nil || !slices.Equal(ids, []string{"c-1", "c-2"}) {
						t.Errorf("SubjectRecords(u-2) = %q, %v", ids, err)
					}
					return nil
				})
			}
			check(ix)
			if names := dirEntries(t, dir); !slices.Equal(names, liveFiles) {
				t.Errorf("data directory holds %q, want only %q", names, liveFiles)
			}
			// The new file is the live one: it takes updates, durably.
			mustUpdate(t, ix, func(w *WriteTx) error { return w.PutUser(user("u-5")) })
			mustUpdate(t, ix, func(w *WriteTx) error { return w.DeleteUser("u-5") })
			if err := ix.Close(); err != nil {
				t.Fatal(err)
			}
			check(openTest(t, Config{Dir: dir}))
		})
	}
}

func TestReplaceAllEmpty(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error { return w.PutRecord(contact("c-1", "l-1", "u-1")) })
	if err := ix.ReplaceAll(3, nil); err != nil {
		t.Fatal(err)
	}
	if ix.AppliedSeq() != 3 || !equalCounts(ix.Counts(), newCounts()) {
		t.Errorf("seq %d counts %+v", ix.AppliedSeq(), ix.Counts())
	}
	mustView(t, ix, func(rt *ReadTx) error {
		compareState(t, readState(t, rt), &state{Seq: 3})
		checkReverseIndex(t, rt)
		return nil
	})
}

func TestReplaceAllFailureKeepsOldIndex(t *testing.T) {
	boom := errors.New("bad line 3")
	for _, tc := range []struct {
		name      string
		load      func(*Loader) error
		wantPanic bool
	}{
		{"load error at once", func(*Loader) error { return boom }, false},
		{"load error after rows", func(l *Loader) error {
			for i := range 50 {
				if err := l.PutRecord(contact(fmt.Sprint("n-", i), "l-1", "u-1")); err != nil {
					return err
				}
			}
			return boom
		}, false},
		{"invalid row returned", func(l *Loader) error {
			if err := l.PutUser(user("u-1")); err != nil {
				return err
			}
			return l.PutRecord(contact("c-1", "l-1", "", ids("f", 11)...))
		}, false},
		{"panic", func(l *Loader) error {
			_ = l.PutUser(user("u-1"))
			panic(boom)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ix := openTest(t, Config{Dir: dir})
			ix.runBuffer, ix.bulkCommit = 64, 2 // spill runs and commit the new file before failing
			mustUpdate(t, ix, func(w *WriteTx) error {
				if err := w.PutUser(user("old", "l-1")); err != nil {
					return err
				}
				if err := w.PutRecord(contact("old", "l-1", "old", "u-9")); err != nil {
					return err
				}
				return w.SetAppliedSeq(11)
			})
			var before *state
			mustView(t, ix, func(rt *ReadTx) error { before = readState(t, rt); return nil })
			err := func() (err error) {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				return ix.ReplaceAll(99, tc.load)
			}()
			if err == nil {
				t.Fatal("ReplaceAll succeeded")
			}
			if tc.wantPanic != (err.Error() == "panic: "+boom.Error()) {
				t.Errorf("error %v", err)
			}
			if !tc.wantPanic && !errors.Is(err, boom) && !errors.Is(err, ErrTooManyFollowers) {
				t.Errorf("error %v is not the load's", err)
			}
			mustView(t, ix, func(rt *ReadTx) error {
				compareState(t, readState(t, rt), before)
				checkReverseIndex(t, rt)
				return nil
			})
			if ix.AppliedSeq() != 11 {
				t.Errorf("AppliedSeq %d", ix.AppliedSeq())
			}
			if names := dirEntries(t, dir); !slices.Equal(names, liveFiles) {
				t.Errorf("data directory holds %q after a failed load", names)
			}
			// Still fully usable.
			mustUpdate(t, ix, func(w *WriteTx) error { return w.SetAppliedSeq(12) })
			if err := ix.ReplaceAll(13, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoaderValidation(t *testing.T) {
	ix := openTest(t, Config{MaxFollowers: 3})
	var saved *Loader
	err := ix.ReplaceAll(1, func(l *Loader) error {
		saved = l
		for _, tc := range []struct {
			name string
			err  error
			put  func() error
		}{
			{"user id empty", ErrInvalidID, func() error { return l.PutUser(user("")) }},
			{"user location NUL", ErrInvalidID, func() error { return l.PutUser(user("u-1", "a\x00")) }},
			{"record id empty", ErrInvalidID, func() error { return l.PutRecord(contact("", "l", "")) }},
			{"record follower too long", ErrInvalidID, func() error {
				return l.PutRecord(contact("c-1", "l", "", string(make([]byte, MaxIDLen+1))))
			}},
			{"4 followers, max 3", ErrTooManyFollowers, func() error { return l.PutRecord(contact("c-1", "l", "", "a", "b", "c", "d")) }},
			{"3 followers plus owner and duplicates", nil, func() error {
				return l.PutRecord(contact("c-2", "l", "o", "a", "o", "b", "a", "c"))
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.put(); !sameErr(err, tc.err) {
					t.Errorf("error %v, want %v", err, tc.err)
				}
			})
		}
		return nil // the invalid rows are skipped
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := saved.PutUser(user("late")); !errors.Is(err, errLoaderDone) {
		t.Errorf("Loader used after ReplaceAll: %v", err)
	}
	mustView(t, ix, func(rt *ReadTx) error {
		want := newState()
		want.Seq = 1
		want.Records[string(recordKey(nil, TypeContact, "c-2"))] = contact("c-2", "l", "o", "a", "b", "c")
		compareState(t, readState(t, rt), want)
		checkReverseIndex(t, rt)
		return nil
	})
}

func TestOpenRemovesLeftoverSnapshotFile(t *testing.T) {
	dir := t.TempDir()
	ix, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	leftover := ix.Path() + loadingSuffix
	spill := ix.Path() + ".spill-123"
	for _, f := range []string{leftover, spill} {
		if err := os.WriteFile(f, []byte("half a snapshot"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Another opener that does not get the lock must leave the file alone: it may be the live
	// server's snapshot in progress.
	if other, err := Open(Config{Dir: dir, Timeout: 100 * time.Millisecond}); err == nil {
		_ = other.Close()
		t.Fatal("second read-write open succeeded")
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Fatalf("a failed Open removed the snapshot file: %v", err)
	}
	if err := ix.Close(); err != nil { // as if the process had crashed mid-ReplaceAll
		t.Fatal(err)
	}
	openTest(t, Config{Dir: dir})
	if names := dirEntries(t, dir); !slices.Equal(names, liveFiles) {
		t.Errorf("data directory holds %q after Open", names)
	}
}

// snapshotRows loads n users whose role and one record whose owner depend on the parity of seq.
func snapshotRows(seq uint64, n int) func(*Loader) error {
	role := "user"
	if seq%2 == 1 {
		role = "admin"
	}
	return func(l *Loader) error {
		for i := range n {
			id := fmt.Sprint("u-", i)
			if err := l.PutUser(User{ID: id, Role: role, LocationIDs: []string{"l-1"}}); err != nil {
				return err
			}
			if err := l.PutRecord(contact(fmt.Sprint("c-", i), "l-1", fmt.Sprint("owner-", seq%2))); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestReplaceAllViewsNeverSeeAMix runs readers while snapshots A (odd seq: admins, owner-1) and
// B (even seq: users, owner-0) replace each other; each read transaction must see one of them whole.
func TestReplaceAllViewsNeverSeeAMix(t *testing.T) {
	const users = 200
	ix := openTest(t, Config{})
	if err := ix.ReplaceAll(1, snapshotRows(1, users)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		views   atomic.Int64
		seen    [2]atomic.Int64
		lastSeq atomic.Uint64 // the highest seq a reader has seen whole
		running atomic.Int32  // readers still reading
	)
	for range 4 {
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			defer running.Add(-1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := ix.View(func(rt *ReadTx) error {
					seq := rt.AppliedSeq()
					wantRole, wantOwner := "user", "owner-0"
					if seq%2 == 1 {
						wantRole, wantOwner = "admin", "owner-1"
					}
					n := 0
					if err := rt.ForEachUser(func(u User) error {
						n++
						if u.Role != wantRole {
							return fmt.Errorf("seq %d: user %s has role %s", seq, u.ID, u.Role)
						}
						return nil
					}); err != nil {
						return err
					}
					if n != users {
						return fmt.Errorf("seq %d: %d users", seq, n)
					}
					for _, id := range []string{"c-0", fmt.Sprint("c-", users-1)} {
						r, ok, err := rt.Record(TypeContact, id)
						if err != nil || !ok || r.Owner != wantOwner {
							return fmt.Errorf("seq %d: record %s = %+v, %v, %v", seq, id, r, ok, err)
						}
					}
					ids, _, err := rt.SubjectRecords(wantOwner, TypeContact, "l-1", "", users+1)
					if err != nil || len(ids) != users {
						return fmt.Errorf("seq %d: owner %s has %d records, %v", seq, wantOwner, len(ids), err)
					}
					if c := rt.Counts(); c.Users != users || c.Records[TypeContact] != users {
						return fmt.Errorf("seq %d: counts %+v", seq, c)
					}
					seen[seq%2].Add(1)
					for cur := lastSeq.Load(); seq > cur && !lastSeq.CompareAndSwap(cur, seq); cur = lastSeq.Load() {
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				views.Add(1)
			}
		}()
	}
	for seq := uint64(2); seq <= 25; seq++ {
		if err := ix.ReplaceAll(seq, snapshotRows(seq, users)); err != nil {
			t.Fatal(err)
		}
		// Each version is read whole at least once before the next: a fixed
		// amount of work, however slowly the readers are scheduled.
		for lastSeq.Load() < seq && running.Load() > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d views (%d of A, %d of B)", views.Load(), seen[1].Load(), seen[0].Load())
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("the readers did not see both snapshots: %d / %d", seen[1].Load(), seen[0].Load())
	}
}

// TestReplaceAllConcurrency: Views go on (on the old index) while a load runs; an Update waits for
// it and applies on top of the new index.
func TestReplaceAllConcurrency(t *testing.T) {
	ix := openTest(t, Config{})
	mustUpdate(t, ix, func(w *WriteTx) error { return w.PutUser(user("old")) })
	loading := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- ix.ReplaceAll(10, func(l *Loader) error {
			if err := l.PutUser(user("new")); err != nil {
				return err
			}
			close(loading)
			<-release
			return nil
		})
	}()
	<-loading
	viewDone := make(chan bool, 1)
	go func() {
		_ = ix.View(func(rt *ReadTx) error {
			_, ok, _ := rt.User("old")
			viewDone <- ok
			return nil
		})
	}()
	select {
	case ok := <-viewDone:
		if !ok {
			t.Error("a View during the load does not see the old index")
		}
	case <-time.After(time.Minute): // a hang, not a speed limit
		t.Fatal("View blocked by a running ReplaceAll")
	}
	updateDone := make(chan error, 1)
	go func() {
		updateDone <- ix.Update(func(w *WriteTx) error {
			if w.AppliedSeq() != 10 {
				return fmt.Errorf("Update ran on seq %d, before the snapshot went live", w.AppliedSeq())
			}
			if err := w.PutUser(user("after")); err != nil {
				return err
			}
			return w.SetAppliedSeq(11)
		})
	}()
	select {
	case err := <-updateDone:
		t.Fatalf("Update ran during ReplaceAll: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-updateDone; err != nil {
		t.Fatal(err)
	}
	mustView(t, ix, func(rt *ReadTx) error {
		want := newState()
		want.Seq = 11
		want.Users["new"] = user("new")
		want.Users["after"] = user("after")
		compareState(t, readState(t, rt), want)
		return nil
	})
}

func countFDs(tb testing.TB) int {
	tb.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(es)
}

func TestReplaceAllNoFDLeak(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	ix := openTest(t, Config{})
	ix.runBuffer = 256 // several runs per load
	if err := ix.ReplaceAll(1, snapshotRows(1, 20)); err != nil {
		t.Fatal(err)
	}
	before := countFDs(t)
	boom := errors.New("boom")
	for seq := uint64(2); seq < 42; seq++ {
		load := snapshotRows(seq, 20)
		if seq%5 == 0 {
			load = func(l *Loader) error { _ = snapshotRows(seq, 20)(l); return boom }
		}
		if err := ix.ReplaceAll(seq, load); err != nil && err != boom {
			t.Fatal(err)
		}
		mustView(t, ix, func(*ReadTx) error { return nil })
	}
	if after := countFDs(t); after != before {
		t.Errorf("open file descriptors: %d before 40 ReplaceAlls, %d after", before, after)
	}
	if names := dirEntries(t, filepath.Dir(ix.Path())); !slices.Equal(names, liveFiles) {
		t.Errorf("data directory holds %q", names)
	}
}
