package postgres

import (
	"reflect"
	"sync"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// usersRelation is the relation of a users table whose location_ids column has type oid, as
// the stream announces it.
func usersRelation(tb testing.TB, oid uint32) *relation {
	tb.Helper()
	msg := &pglogrepl.RelationMessage{Namespace: "public", RelationName: "crm_users", Columns: []*pglogrepl.RelationMessageColumn{
		{Name: "id", DataType: pgtype.TextOID},
		{Name: "location_ids", DataType: oid},
		{Name: "assigned_data_only", DataType: pgtype.BoolOID},
	}}
	tables := []table{{kind: "users", schema: "public", name: "crm_users",
		cols: map[string]string{"id": "id", "location_ids": "location_ids", "assigned_data_only": "assigned_data_only"}}}
	r := newRelation(msg, tables)
	if len(r.pos) != 3 {
		tb.Fatalf("the relation maps %v, want the three columns", r.pos)
	}
	return r
}

// TestTupleValuesDecodeConcurrently: the streams of two connectors in one process decode their
// tuples at once. Each decodes with type handling of its own (a pgtype.Map keeps caches it
// fills on use and is not safe for concurrent use): a package-level one was written by both,
// which -race reported. The column types include one the driver does not know (a domain over
// text[], say), whose first decoding fills the map's cache.
func TestTupleValuesDecodeConcurrently(t *testing.T) {
	const unknownArrayOID = 987654
	td := &pglogrepl.TupleData{Columns: []*pglogrepl.TupleDataColumn{
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("u-1")},
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte(`{loc-1,"loc 2"}`)},
		{DataType: pglogrepl.TupleDataTypeText, Data: []byte("t")},
	}}
	var wg sync.WaitGroup
	for _, oid := range []uint32{unknownArrayOID, unknownArrayOID, pgtype.TextArrayOID, pgtype.VarcharArrayOID} {
		r := usersRelation(t, oid)
		wg.Go(func() {
			for range 50 {
				vals := r.tuple(td)
				locs, null, err := vals["location_ids"].strings()
				if err != nil || null || !reflect.DeepEqual(locs, []string{"loc-1", "loc 2"}) {
					t.Errorf("location_ids of oid %d: %q, null %v, %v", oid, locs, null, err)
					return
				}
				b, err := vals["assigned_data_only"].boolean()
				if err != nil || b == nil || !*b {
					t.Errorf("assigned_data_only: %v, %v", b, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
