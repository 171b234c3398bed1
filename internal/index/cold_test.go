package index_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/coldtest"
	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/index"
)

// BenchmarkViewCold is the index's part of a decision as it runs in the server: one read
// transaction reading the subject, the record and (for the actions that have one) the target of a
// request of the load mix (internal/dataset), with the caches cold. Between two decisions the
// server runs net/http, the kernel's loopback and the load generator on the same cores, which
// evict bbolt's pages and code; here the loop reads evict bytes of a 64 MiB buffer at random lines
// between two Views, outside the timed part (as internal/policy's BenchmarkDecideCold). Only the
// View is timed: read-ns/op is the mean, p50-ns the median. See BENCHMARKS.md, "Session 6: the
// index's cold read".
//
// The index holds the bench's world: 10,000 users and CRMAUTHZ_COLD_RECORDS records (default
// 1,000,000). Building it takes ~10 s; with CRMAUTHZ_COLD_DIR set, it is built there once and
// reused by later runs (and by other binaries: the file format is the index's).
func BenchmarkViewCold(b *testing.B) {
	ix, w := coldIndex(b)
	const nreq = 1 << 16
	reqs := make([]dataset.Request, nreq)
	for i := range reqs {
		reqs[i] = w.RequestAt(i)
	}
	// One untimed pass over the requests first, as a server in its steady state has served them:
	// the file's pages they read are mapped (no page fault in the timed reads) and whatever the
	// index keeps between Views is warm.
	for i := range reqs {
		if err := ix.View(func(t *index.ReadTx) error {
			_, err := readRequest(t, &reqs[i])
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for _, bc := range []struct {
		name  string
		evict int
	}{
		{"hot", 0},
		{"evict=2MiB", 2 << 20},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ev := coldtest.Evictor{Buf: buf, Seed: 1}
			durs := make([]time.Duration, 0, 1<<16)
			var req *dataset.Request
			found := 0
			read := func(t *index.ReadTx) error {
				n, err := readRequest(t, req)
				found += n
				return err
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req = &reqs[i%nreq]
				i++
				ev.Touch(bc.evict)
				t0 := time.Now()
				err := ix.View(read)
				durs = append(durs, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
			}
			if found == 0 {
				b.Fatal("no request found its facts")
			}
			var sum time.Duration
			for _, d := range durs {
				sum += d
			}
			slices.Sort(durs)
			b.ReportMetric(float64(sum)/float64(len(durs)), "read-ns/op")
			b.ReportMetric(float64(durs[len(durs)/2]), "p50-ns")
			coldSink = ev.Sum
		})
	}
}

// readRequest reads what a decision on req reads: the state's applied seq (the server answers
// it), its subject, its record and its target if it has one. n is how many of them were found.
func readRequest(t *index.ReadTx, req *dataset.Request) (n int, err error) {
	coldSink += t.AppliedSeq()
	for _, id := range [2]string{req.Subject, req.Target} {
		if id == "" {
			continue
		}
		u, err := t.UserJSON(id)
		if err != nil {
			return n, err
		}
		if u != nil {
			n++
		}
		if id == req.Subject {
			r, err := t.RecordJSON(req.Type, req.ID)
			if err != nil {
				return n, err
			}
			if r != nil {
				n++
			}
		}
	}
	return n, nil
}

// coldSink keeps the evictor's reads alive.
var coldSink uint64

// coldIndex opens the cold benchmark's index (see BenchmarkViewCold), building it if needed.
func coldIndex(b *testing.B) (*index.Index, dataset.World) {
	b.Helper()
	n := 1_000_000
	if s := os.Getenv("CRMAUTHZ_COLD_RECORDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("CRMAUTHZ_COLD_RECORDS=%q: not a positive number", s)
		}
	}
	w := dataset.New(dataset.Config{Records: n, Users: 10_000})
	dir := os.Getenv("CRMAUTHZ_COLD_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir = filepath.Join(dir, strconv.Itoa(n))
	}
	cfg := index.DefaultConfig()
	cfg.Dir = dir
	ix, err := index.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ix.Close() })
	c := ix.Counts()
	if c.Users == uint64(w.Config().Users) && c.Records[index.TypeContact]+c.Records[index.TypeOpportunity] == uint64(n) {
		return ix, w
	}
	err = ix.ReplaceAll(1, func(l *index.Loader) error {
		for i := range w.Config().Users {
			u := w.UserAt(i)
			if err := l.PutUser(index.User{ID: u.ID, Role: u.Role, LocationIDs: []string{u.Location},
				AssignedDataOnly: u.AssignedDataOnly, ContactsEnabled: true, OpportunitiesEnabled: true}); err != nil {
				return err
			}
		}
		for i := range n {
			r := w.RecordAt(i)
			if err := l.PutRecord(index.Record{Type: r.Type, ID: r.ID, LocationID: r.Location,
				Owner: r.Owner, Followers: r.Followers}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return ix, w
}
