package index

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchRows loads users and records: records of both types over 5 locations, each with an owner and
// 1–10 followers drawn from the users.
func benchRows(nUsers, nRecords int, seed uint64) func(*Loader) error {
	return func(l *Loader) error {
		rng := rand.New(rand.NewPCG(seed, 1))
		userIDs := ids("u-", nUsers)
		for i, id := range userIDs {
			if err := l.PutUser(User{ID: id, Role: "user", LocationIDs: []string{fmt.Sprint("loc-", i%5)},
				AssignedDataOnly: true, ContactsEnabled: true, OpportunitiesEnabled: true}); err != nil {
				return err
			}
		}
		fs := make([]string, 0, 10)
		for i := range nRecords {
			typ := TypeContact
			if i%3 == 0 {
				typ = TypeOpportunity
			}
			fs = fs[:0]
			for range 1 + rng.IntN(10) {
				fs = append(fs, userIDs[rng.IntN(nUsers)])
			}
			r := Record{Type: typ, ID: fmt.Sprintf("r-%08d", i), LocationID: fmt.Sprint("loc-", i%5),
				Owner: userIDs[rng.IntN(nUsers)], Followers: fs}
			if err := l.PutRecord(r); err != nil {
				return err
			}
		}
		return nil
	}
}

func benchIndex(b *testing.B, nUsers, nRecords int) *Index {
	b.Helper()
	ix := openTest(b, Config{})
	if err := ix.ReplaceAll(1, benchRows(nUsers, nRecords, 1)); err != nil {
		b.Fatal(err)
	}
	return ix
}

// BenchmarkView_UserRecord is the facts of one decision: one read transaction reading one user
// and one record from an index of 100,000 records.
func BenchmarkView_UserRecord(b *testing.B) {
	benchUserRecord(b, benchIndex(b, 10_000, 100_000))
}

// BenchmarkView_UserRecordOverlay is BenchmarkView_UserRecord with a non-empty overlay: 10,000
// follower changes applied after the load and not merged, so that every read looks in the overlay
// first (some of the records read are in it).
func BenchmarkView_UserRecordOverlay(b *testing.B) {
	ix := benchIndex(b, 10_000, 100_000)
	ix.mergeBytes = 1 << 40
	for k := range 10 {
		mustUpdate(b, ix, func(w *WriteTx) error {
			for i := range 1000 {
				j := (k*1000 + i) * 7 % 100_000
				if i%100 == 0 {
					j = (k*100 + i/100) * 97 % 100_000
				}
				typ := TypeContact
				if j%3 == 0 {
					typ = TypeOpportunity
				}
				if err := w.AddFollower(typ, fmt.Sprintf("r-%08d", j), "u-new"); err != nil && !isTooMany(err) {
					return err
				}
			}
			return w.SetAppliedSeq(uint64(2 + k))
		})
	}
	benchUserRecord(b, ix)
}

// benchUserRecord reads one user and one record per View, over 1,024 of each.
func benchUserRecord(b *testing.B, ix *Index) {
	const n = 1024
	userIDs, recIDs, types := make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		userIDs[i] = fmt.Sprint("u-", i*7%10_000)
		j := i * 97 % 100_000
		recIDs[i] = fmt.Sprintf("r-%08d", j)
		types[i] = TypeContact
		if j%3 == 0 {
			types[i] = TypeOpportunity
		}
	}
	i := 0
	fn := func(rt *ReadTx) error {
		u, err := rt.UserJSON(userIDs[i%n])
		if err != nil || u == nil {
			return fmt.Errorf("user %s: %q %v", userIDs[i%n], u, err)
		}
		r, err := rt.RecordJSON(types[i%n], recIDs[i%n])
		if err != nil || r == nil {
			return fmt.Errorf("record %s: %q %v", recIDs[i%n], r, err)
		}
		return nil
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := ix.View(fn); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkView_UserRecordParallel is the same from all CPUs at once.
func BenchmarkView_UserRecordParallel(b *testing.B) {
	ix := benchIndex(b, 10_000, 100_000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		fn := func(rt *ReadTx) error {
			if u, err := rt.UserJSON("u-42"); err != nil || u == nil {
				return fmt.Errorf("user: %v", err)
			}
			if r, err := rt.RecordJSON(TypeContact, "r-00000043"); err != nil || r == nil {
				return fmt.Errorf("record: %v", err)
			}
			return nil
		}
		for pb.Next() {
			if err := ix.View(fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSubjectRecords lists one page of 100 of a user's records.
func BenchmarkSubjectRecords(b *testing.B) {
	ix := benchIndex(b, 1_000, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		if err := ix.View(func(rt *ReadTx) error {
			_, _, err := rt.SubjectRecords("u-7", TypeContact, "loc-2", "", 100)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply1000 is one replication batch: one Update applying 1,000 operations (record
// upserts, follower adds and removes, owner changes) to an index of 100,000 records, committed.
func BenchmarkApply1000(b *testing.B) {
	ix := benchIndex(b, 10_000, 100_000)
	rng := rand.New(rand.NewPCG(7, 7))
	seq := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		type ev struct {
			kind      int
			typ, id   string
			user      string
			followers []string
		}
		evs := make([]ev, 1000)
		for i := range evs {
			j := rng.IntN(100_000)
			typ := TypeContact
			if j%3 == 0 {
				typ = TypeOpportunity
			}
			evs[i] = ev{kind: rng.IntN(4), typ: typ, id: fmt.Sprintf("r-%08d", j), user: fmt.Sprint("u-", rng.IntN(10_000))}
			if evs[i].kind == 0 {
				evs[i].followers = []string{fmt.Sprint("u-", rng.IntN(10_000)), fmt.Sprint("u-", rng.IntN(10_000))}
			}
		}
		b.StartTimer()
		err := ix.Update(func(w *WriteTx) error {
			for _, e := range evs {
				var err error
				switch e.kind {
				case 0:
					err = w.PutRecord(Record{Type: e.typ, ID: e.id, LocationID: "loc-1", Owner: e.user, Followers: e.followers})
				case 1:
					err = w.AddFollower(e.typ, e.id, e.user)
					if err != nil && isTooMany(err) {
						err = nil
					}
				case 2:
					err = w.RemoveFollower(e.typ, e.id, e.user)
				case 3:
					err = w.SetOwner(e.typ, e.id, e.user)
				}
				if err != nil {
					return err
				}
			}
			seq += 1000
			return w.SetAppliedSeq(seq)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func isTooMany(err error) bool { return sameErr(err, ErrTooManyFollowers) }

// BenchmarkReplaceAll loads a snapshot of 100,000 records (1–10 followers each) and 10,000 users.
func BenchmarkReplaceAll(b *testing.B) {
	ix := openTest(b, Config{})
	load := benchRows(10_000, 100_000, 1)
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		if err := ix.ReplaceAll(seq, load); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100_000, "ns/record")
}
