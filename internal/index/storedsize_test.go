package index

import (
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestStoredSizes1M reports, on BenchmarkRandomReplication1M's index, the bytes of the records and
// byuser buckets' keys and values and their leaf pages, and what other encodings would take
// (REPL_BENCH_SIZES=1; BENCHMARKS.md, "Random replication").
func TestStoredSizes1M(t *testing.T) {
	if os.Getenv("REPL_BENCH_SIZES") == "" {
		t.Skip("REPL_BENCH_SIZES unset")
	}
	path := replBenchFile(t, 0)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const elem = 16 // a leaf element's header
	err = db.View(func(tx *bolt.Tx) error {
		var n, k, v, noTypeID, bin int
		err := tx.Bucket(bucketRecords).ForEach(func(key, val []byte) error {
			r, err := decodeRecord(val)
			if err != nil {
				return err
			}
			n++
			k += len(key)
			v += len(val)
			// JSON without "type" and "id"
			noTypeID += len(val) - len(`"type":"","id":"",`) - len(r.Type) - len(r.ID)
			// binary: the snapshot spill's encoding, type and id left empty (two length bytes)
			bin += len(appendRecordBinary(nil, &Record{LocationID: r.LocationID, Owner: r.Owner,
				ContactID: r.ContactID, Followers: r.Followers}))
			return nil
		})
		if err != nil {
			return err
		}
		st := tx.Bucket(bucketRecords).Stats()
		t.Logf("records: %d keys, key %.1f B, value %.1f B (JSON no type/id %.1f B, binary %.1f B); leaf pages %d, inuse %d B, fill %.3f",
			n, float64(k)/float64(n), float64(v)/float64(n), float64(noTypeID)/float64(n), float64(bin)/float64(n),
			st.LeafPageN, st.LeafInuse, float64(st.LeafInuse)/float64(st.LeafPageN*4096))
		t.Logf("records: per element now %.1f B, no type/id %.1f B, binary %.1f B",
			float64(n*elem+k+v)/float64(n), float64(n*elem+k+noTypeID)/float64(n), float64(n*elem+k+bin)/float64(n))
		var un, uk, ukc int
		err = tx.Bucket(bucketByUser).ForEach(func(key, val []byte) error {
			_, typ, _, _, ok := splitByUserKey(key)
			if !ok {
				t.Fatalf("bad key %q", key)
			}
			un++
			uk += len(key)
			ukc += len(key) - len(typ) - 1 + 1 // the type and its NUL → one code byte
			return nil
		})
		if err != nil {
			return err
		}
		st = tx.Bucket(bucketByUser).Stats()
		t.Logf("byuser: %d keys, key %.1f B (type code %.1f B); leaf pages %d, inuse %d B, fill %.3f; per element now %.1f B, with code %.1f B",
			un, float64(uk)/float64(un), float64(ukc)/float64(un), st.LeafPageN, st.LeafInuse,
			float64(st.LeafInuse)/float64(st.LeafPageN*4096), float64(un*(elem+1)+uk)/float64(un), float64(un*(elem+1)+ukc)/float64(un))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
