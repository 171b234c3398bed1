package index

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// readUser reads user id's JSON in one View ("" when absent).
func readUser(tb testing.TB, ix *Index, id string) string {
	tb.Helper()
	var s string
	mustView(tb, ix, func(t *ReadTx) error {
		v, err := t.UserJSON(id)
		s = string(v)
		return err
	})
	return s
}

// readSeq reads the applied seq twice in one View (the second from the state's cache once a View
// of the state read it) and fails when the two differ.
func readSeq(tb testing.TB, ix *Index) uint64 {
	tb.Helper()
	var seq uint64
	mustView(tb, ix, func(t *ReadTx) error {
		seq = t.AppliedSeq()
		if again := t.AppliedSeq(); again != seq {
			return fmt.Errorf("applied seq %d, then %d in the same View", seq, again)
		}
		return nil
	})
	return seq
}

func putUsers(tb testing.TB, ix *Index, seq uint64, us ...User) {
	tb.Helper()
	mustUpdate(tb, ix, func(w *WriteTx) error {
		for _, u := range us {
			if err := w.PutUser(u); err != nil {
				return err
			}
		}
		return w.SetAppliedSeq(seq)
	})
}

// openHeld opens an index whose file is mapped large enough that a View held open does not block
// the commits beside it (bbolt's remap waits for every read transaction).
func openHeld(t testing.TB) *Index {
	t.Helper()
	tune := defaultTuning()
	tune.initialMmapSize = 64 << 20
	ix, err := openTuned(Config{Dir: t.TempDir()}, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	return ix
}

// cached returns what h's users' cache holds for id (ok false: not cached, or no cache).
func cached(ix *Index, id string) (val string, ok bool) {
	ix.rw.RLock()
	h := ix.cur
	ix.rw.RUnlock()
	c := h.users.Load()
	if c == nil {
		return "", false
	}
	v, ok := c.get(id)
	return string(v), ok
}

// TestUserCacheHit: a second View of the same state answers from the cache, present and absent
// users alike, with the stored bytes.
func TestUserCacheHit(t *testing.T) {
	ix := openTest(t, Config{})
	putUsers(t, ix, 1, user("u-1", "l-1"))
	want := readUser(t, ix, "u-1")
	if !strings.Contains(want, `"u-1"`) {
		t.Fatalf("u-1: %q", want)
	}
	if got := readUser(t, ix, "u-404"); got != "" {
		t.Fatalf("u-404: %q, want absent", got)
	}
	for _, tc := range []struct{ id, want string }{{"u-1", want}, {"u-404", ""}} {
		t.Run(tc.id, func(t *testing.T) {
			if v, ok := cached(ix, tc.id); !ok || v != tc.want {
				t.Fatalf("cache: %q %v, want %q cached", v, ok, tc.want)
			}
			if got := readUser(t, ix, tc.id); got != tc.want {
				t.Fatalf("read: %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUserCacheEachCommit: every kind of commit gives the next View the new users, whatever the
// cache held: a batch (overlay), a merge, a snapshot (a new file), and a batch after the merge
// (main buckets and overlay).
func TestUserCacheEachCommit(t *testing.T) {
	ix := openTest(t, Config{})
	role := func(r string) User { u := user("u-1", "l-1"); u.Role = r; return u }
	steps := []struct {
		name string
		do   func(t *testing.T)
		role string
	}{
		{"batch", func(t *testing.T) { putUsers(t, ix, 1, role("admin")) }, "admin"},
		{"second batch", func(t *testing.T) { putUsers(t, ix, 2, role("user")) }, "user"},
		{"merge", func(t *testing.T) { forceMerge(t, ix, -1) }, "user"},
		{"batch after the merge", func(t *testing.T) { putUsers(t, ix, 3, role("admin")) }, "admin"},
		{"snapshot", func(t *testing.T) {
			if err := ix.ReplaceAll(4, func(l *Loader) error { return l.PutUser(role("user")) }); err != nil {
				t.Fatal(err)
			}
		}, "user"},
		{"delete", func(t *testing.T) {
			mustUpdate(t, ix, func(w *WriteTx) error { return w.DeleteUser("u-1") })
		}, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			readUser(t, ix, "u-1") // fill the cache with the state before
			before := readSeq(t, ix)
			st.do(t)
			if got, want := readSeq(t, ix), ix.AppliedSeq(); got != want {
				t.Fatalf("after %s: applied seq %d, want %d (before: %d)", st.name, got, want, before)
			}
			got := readUser(t, ix, "u-1")
			if st.role == "" {
				if got != "" {
					t.Fatalf("after %s: %q, want absent", st.name, got)
				}
				return
			}
			if !strings.Contains(got, `"role":"`+st.role+`"`) {
				t.Fatalf("after %s: %q, want role %s", st.name, got, st.role)
			}
			if again := readUser(t, ix, "u-1"); again != got {
				t.Fatalf("second read after %s: %q, want %q", st.name, again, got)
			}
		})
	}
}

// TestUserCacheOldView: a View that began before a commit reads the users of its own state, also
// after a View of the new state filled the cache, and a user it reads first after the commit
// neither comes from nor goes into the new state's cache.
func TestUserCacheOldView(t *testing.T) {
	ix := openHeld(t)
	putUsers(t, ix, 1, user("u-1", "l-1"), user("u-2", "l-1"))
	old1, old2 := readUser(t, ix, "u-1"), readUser(t, ix, "u-2")
	inView, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- ix.View(func(rt *ReadTx) error {
			if v, err := rt.UserJSON("u-1"); err != nil || string(v) != old1 {
				return fmt.Errorf("before the commit: u-1 %q %v, want %q", v, err, old1)
			}
			if seq := rt.AppliedSeq(); seq != 1 {
				return fmt.Errorf("before the commit: applied seq %d, want 1", seq)
			}
			close(inView)
			<-resume
			if seq := rt.AppliedSeq(); seq != 1 {
				return fmt.Errorf("after the commit: applied seq %d, want 1", seq)
			}
			for _, c := range []struct{ id, want string }{{"u-1", old1}, {"u-2", old2}} {
				if v, err := rt.UserJSON(c.id); err != nil || string(v) != c.want {
					return fmt.Errorf("after the commit: %s %q %v, want %q", c.id, v, err, c.want)
				}
			}
			return nil
		})
	}()
	<-inView
	putUsers(t, ix, 2, user("u-1", "l-2"), user("u-2", "l-2"))
	new1 := readUser(t, ix, "u-1")
	if seq := readSeq(t, ix); seq != 2 {
		t.Fatalf("new state: applied seq %d, want 2", seq)
	}
	if new1 == old1 || !strings.Contains(new1, "l-2") {
		t.Fatalf("new state: u-1 %q", new1)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, ok := cached(ix, "u-2"); ok {
		t.Fatalf("the old View's read of u-2 went into the new state's cache: %q", v)
	}
	if got := readUser(t, ix, "u-2"); !strings.Contains(got, "l-2") {
		t.Fatalf("new state: u-2 %q", got)
	}
}

// TestUserCacheSameTxDifferentState: two Views can share a bbolt transaction id and still see
// different states (one loaded the overlay state before a batch's commit, Begin came after it, and
// the batch was published meanwhile): the cache is keyed by the overlay state too. Whichever reads
// first, each sees its own state's user.
func TestUserCacheSameTxDifferentState(t *testing.T) {
	for _, staleFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("stale first ", staleFirst), func(t *testing.T) {
			ix := openHeld(t)
			putUsers(t, ix, 1, user("u-1", "l-1"))
			old := readUser(t, ix, "u-1")
			// The stale View must begin a transaction of its own: with the state's shared one
			// cached it would take that (sharedread.go), and start over when the batch retires it.
			forgetShared(ix)
			// The hook runs in Update too (beginRead): the batch it commits must not run it again.
			var fired atomic.Bool
			ix.hooks.viewLoaded = func() {
				if fired.CompareAndSwap(false, true) {
					putUsers(t, ix, 2, user("u-1", "l-2")) // commits and publishes
				}
			}
			inView, resume := make(chan struct{}), make(chan struct{})
			done := make(chan error)
			var txid int
			go func() {
				done <- ix.View(func(rt *ReadTx) error {
					txid = rt.tx.ID()
					close(inView)
					<-resume
					if v, err := rt.UserJSON("u-1"); err != nil || string(v) != old {
						return fmt.Errorf("stale View: u-1 %q %v, want %q", v, err, old)
					}
					if seq := rt.AppliedSeq(); seq != 1 {
						return fmt.Errorf("stale View: applied seq %d, want 1", seq)
					}
					return nil
				})
			}()
			<-inView
			ix.hooks.viewLoaded = nil
			fresh := func() {
				mustView(t, ix, func(rt *ReadTx) error {
					if rt.tx.ID() != txid {
						return fmt.Errorf("fresh View's transaction %d, stale one's %d: the test needs one", rt.tx.ID(), txid)
					}
					if v, err := rt.UserJSON("u-1"); err != nil || !strings.Contains(string(v), "l-2") {
						return fmt.Errorf("fresh View: u-1 %q %v, want location l-2", v, err)
					}
					if seq := rt.AppliedSeq(); seq != 2 {
						return fmt.Errorf("fresh View: applied seq %d, want 2", seq)
					}
					return nil
				})
			}
			if staleFirst {
				close(resume)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				fresh()
			} else {
				fresh()
				close(resume)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			fresh()
		})
	}
}

// TestUserCacheBounds: a full cache, or one holding its share of absent users, caches no more,
// and still answers what it holds.
func TestUserCacheBounds(t *testing.T) {
	c := newUserCache(1, &ovState{})
	for i := range ucMaxAbsent + 10 {
		c.put(fmt.Sprint("nobody-", i), nil)
	}
	if c.len() != ucMaxAbsent {
		t.Fatalf("%d absent users cached, want %d", c.len(), ucMaxAbsent)
	}
	if v, ok := c.get("nobody-0"); !ok || v != nil {
		t.Fatalf("nobody-0: %q %v, want cached absent", v, ok)
	}
	if _, ok := c.get(fmt.Sprint("nobody-", ucMaxAbsent)); ok {
		t.Fatal("an absent user beyond the bound is cached")
	}
	big := make([]byte, ucMaxBytes/4)
	for i := range 5 {
		c.put(fmt.Sprint("big-", i), big)
	}
	if _, ok := c.get("big-3"); ok {
		t.Fatal("a user beyond the bytes' bound is cached")
	}
	if v, ok := c.get("big-0"); !ok || len(v) != len(big) {
		t.Fatalf("big-0: %d bytes %v", len(v), ok)
	}
	for i := range ucMaxEntries {
		c.put(fmt.Sprint("u-", i), []byte("{}"))
	}
	if n := c.len(); n != ucMaxEntries {
		t.Fatalf("%d users cached, want %d", n, ucMaxEntries)
	}
	if v, ok := c.get("u-10"); !ok || string(v) != "{}" {
		t.Fatalf("u-10: %q %v", v, ok)
	}
}

// TestUserCacheGrowth: the arena grows and the slots are rebuilt as users are added; every user
// keeps its own JSON (present, empty or absent), and the JSON a get returned before the growth
// stays as it was.
func TestUserCacheGrowth(t *testing.T) {
	c := newUserCache(1, &ovState{})
	const n = 5000
	json := func(i int) []byte {
		switch i % 7 {
		case 0:
			return nil // absent
		case 1:
			return []byte{}
		}
		return []byte(fmt.Sprintf(`{"id":"u-%d","pad":%q}`, i, strings.Repeat("x", i%300)))
	}
	early := map[int][]byte{}
	for i := range n {
		c.put(fmt.Sprint("u-", i), json(i))
		if i < 50 {
			v, ok := c.get(fmt.Sprint("u-", i))
			if !ok {
				t.Fatalf("u-%d not cached right after its put", i)
			}
			early[i] = v
		}
	}
	if c.len() != n {
		t.Fatalf("%d users cached, want %d", c.len(), n)
	}
	for i := range n {
		v, ok := c.get(fmt.Sprint("u-", i))
		if want := json(i); !ok || string(v) != string(want) || (v == nil) != (want == nil) {
			t.Fatalf("u-%d: %q (nil %v) %v, want %q (nil %v)", i, v, v == nil, ok, want, want == nil)
		}
	}
	for i, v := range early {
		if want := json(i); string(v) != string(want) {
			t.Fatalf("u-%d read before the growth: now %q, want %q", i, v, want)
		}
	}
	if _, ok := c.get("u-nobody"); ok {
		t.Fatal("u-nobody is cached")
	}
}

// TestUserCacheConcurrent: Views beside batches and background merges (a small MergeBytes) read
// the users of the state their applied_seq says, every time: batch seq puts every user in
// location l-<seq>.
func TestUserCacheConcurrent(t *testing.T) {
	ix := openTest(t, Config{MergeBytes: 4 << 10})
	ids := []string{"u-1", "u-2", "u-3", "u-4"}
	batch := func(seq uint64) {
		us := make([]User, len(ids))
		for i, id := range ids {
			us[i] = user(id, fmt.Sprint("l-", seq))
		}
		putUsers(t, ix, seq, us...)
	}
	batch(1)
	const batches = 300
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var views [4]int
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					if n > 0 {
						errs <- nil
						return
					}
				default:
				}
				err := ix.View(func(rt *ReadTx) error {
					want := fmt.Sprintf(`"location_ids":["l-%d"]`, rt.AppliedSeq())
					for i := range 2 * len(ids) { // each user twice: the second read hits
						v, err := rt.UserJSON(ids[(i+r)%len(ids)])
						if err != nil || !strings.Contains(string(v), want) {
							return fmt.Errorf("%s: %q %v, want %s", ids[(i+r)%len(ids)], v, err, want)
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				views[r]++
			}
		}()
	}
	for seq := uint64(2); seq <= batches; seq++ {
		batch(seq)
	}
	close(stop)
	wg.Wait()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if ix.merges.Load() == 0 {
		t.Fatal("no merge ran beside the Views")
	}
	t.Logf("views %v, merges %d", views, ix.merges.Load())
}
