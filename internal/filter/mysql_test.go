package filter_test

import (
	"fmt"
	"slices"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/mysqltest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// TestMySQLComparesBytes runs comparisons on MariaDB whose tables have the
// server's default collation (utf8mb4_general_ci: case- and
// accent-insensitive, trailing spaces ignored, every character beyond the BMP
// alike), with ids that such a collation equates and Rego does not. Before
// the mysql dialect compared bytes, "owner == u-1" selected the records of
// "U-1", "u-1 " and "ü-1" too, and a follower test those they follow.
func TestMySQLComparesBytes(t *testing.T) {
	recs := []refmodel.Record{
		{Type: "opportunity", ID: "o-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{}},
		{Type: "opportunity", ID: "o-2", LocationID: "loc-1", Owner: "U-1", Followers: []string{"u-2"}, ContactID: "C-1"},
		{Type: "opportunity", ID: "o-3", LocationID: "loc-1", Owner: "u-1 ", Followers: []string{"U-1"}, ContactID: "c-1"},
		{Type: "opportunity", ID: "o-4", LocationID: "loc-1", Owner: "ü-1", Followers: []string{"u-1 "}, ContactID: "c-1 "},
		{Type: "opportunity", ID: "o-5", LocationID: "loc-1", Owner: "", Followers: []string{"u-1"}},
		{Type: "opportunity", ID: "o-6", LocationID: "loc-1", Owner: "", Followers: []string{"ü-1"}}, // o-5 or o-6 has a NULL owner (loadDB)
		{Type: "opportunity", ID: "o-7", LocationID: "loc-1", Owner: " ", Followers: []string{"🦊"}},
		{Type: "opportunity", ID: "o-8", LocationID: "loc-1", Owner: "😀", Followers: []string{}},
	}
	m := refmodel.New()
	for _, r := range recs {
		m.Records[refmodel.Key{Type: r.Type, ID: r.ID}] = r
	}
	srv := mysqltest.New(t, mysqltest.DefaultConfig())
	maria := srv.DB(t, "crm")
	loadDB(t, maria, mapping.Default(), myStyle, m)
	lite := openSQLite(t)
	loadDB(t, lite, mapping.Default(), liteStyle, m)
	dbs := []database{{"mariadb", filter.MySQL, maria, myStyle}, {"sqlite", filter.SQLite, lite, liteStyle}}
	tr := translator(t)
	rm, _ := tr.Mapping().Records("opportunity")
	tests := []struct {
		name    string
		queries []string
		want    []string
	}{
		{"owner", []string{`input.record.owner == "u-1"`}, []string{"o-1"}},
		{"another case", []string{`input.record.owner == "U-1"`}, []string{"o-2"}},
		{"a trailing space", []string{`input.record.owner == "u-1 "`}, []string{"o-3"}},
		{"an accent", []string{`input.record.owner == "ü-1"`}, []string{"o-4"}},
		{"beyond the BMP", []string{`input.record.owner == "🦊"`}, []string{}},
		{"not the owner", []string{`input.record.owner != "u-1"`}, []string{"o-2", "o-3", "o-4", "o-5", "o-6", "o-7", "o-8"}},
		{"unassigned", []string{`input.record.owner == ""`}, []string{"o-5", "o-6"}},
		{"assigned", []string{`input.record.owner != ""`}, []string{"o-1", "o-2", "o-3", "o-4", "o-7", "o-8"}},
		{"follower", []string{`"u-1" in input.record.followers`}, []string{"o-5"}},
		{"follower beyond the BMP", []string{`"😀" in input.record.followers`}, []string{}},
		{"not a follower", []string{`not "u-1" in input.record.followers`}, []string{"o-1", "o-2", "o-3", "o-4", "o-6", "o-7", "o-8"}},
		{"a follower other than", []string{`input.record.followers[x] != "u-1"`}, []string{"o-2", "o-3", "o-4", "o-6", "o-7"}},
		{"contact", []string{`input.record.contact_id == "c-1"`}, []string{"o-3"}},
		{"not that contact", []string{`not input.record.contact_id == "c-1"`}, []string{"o-1", "o-2", "o-4", "o-5", "o-6", "o-7", "o-8"}},
		{"id", []string{`input.record.id in {"O-1", "o-2 "}`}, []string{}},
		{"owner or follower", []string{`input.record.owner == "u-1"`, `"u-1" in input.record.followers`}, []string{"o-1", "o-5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dbase := range dbs {
				f, err := tr.Translate(filter.Input{Queries: bodies(t, tt.queries...), Unknown: record, RecordType: "opportunity"}, dbase.dialect)
				if err != nil {
					t.Fatal(err)
				}
				if got := selected(t, dbase, rm, "loc-1", f); !slices.Equal(got, tt.want) {
					t.Fatalf("%s: %+v (%+v) selects %q, want %q", dbase.name, f, f.SQL, got, tt.want)
				}
			}
		})
	}

	// A UUID column (MariaDB's type): compared as its text, so an id in
	// upper case is another id, as in Rego, and an id that is no UUID is
	// compared too.
	t.Run("a UUID owner column", func(t *testing.T) {
		const owner = "0e8f5d7a-1c2b-4d3e-8f90-123456789abc"
		db := srv.DB(t, "uuids")
		for _, stmt := range []string{
			"CREATE TABLE crm_opportunities (id varchar(191) primary key, location_id varchar(191) not null, owner_id uuid, contact_id varchar(191))",
			"CREATE TABLE crm_record_followers (record_type varchar(20) not null, record_id varchar(191) not null, user_id uuid not null, primary key (record_type, record_id, user_id))",
			fmt.Sprintf("INSERT INTO crm_opportunities VALUES ('o-1', 'loc-1', '%s', NULL), ('o-2', 'loc-1', NULL, NULL)", owner),
			fmt.Sprintf("INSERT INTO crm_record_followers VALUES ('opportunity', 'o-2', '%s')", owner),
		} {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		upper := "0E8F5D7A-1C2B-4D3E-8F90-123456789ABC"
		for _, tt := range []struct {
			query string
			want  []string
		}{
			{`input.record.owner == "` + owner + `"`, []string{"o-1"}},
			{`input.record.owner == "` + upper + `"`, []string{}},
			{`input.record.owner != "` + upper + `"`, []string{"o-1", "o-2"}},
			{`input.record.owner != "u-1"`, []string{"o-1", "o-2"}},
			{`"` + owner + `" in input.record.followers`, []string{"o-2"}},
			{`"` + upper + `" in input.record.followers`, []string{}},
		} {
			f, err := tr.Translate(filter.Input{Queries: bodies(t, tt.query), Unknown: record, RecordType: "opportunity"}, filter.MySQL)
			if err != nil {
				t.Fatal(err)
			}
			if got := selected(t, database{"mariadb", filter.MySQL, db, myStyle}, rm, "loc-1", f); !slices.Equal(got, tt.want) {
				t.Fatalf("%s: %+v selects %q, want %q", tt.query, f.SQL, got, tt.want)
			}
		}
	})
}

// TestMySQLRendering pins the mysql dialect's text: a comparison with a value
// is the column's (which an index serves) and the bytes of its text.
func TestMySQLRendering(t *testing.T) {
	tr := translator(t)
	f, err := tr.Translate(filter.Input{Queries: bodies(t, `input.record.owner == "u"`, `not input.record.owner == "u"; "u" in input.record.followers`),
		Unknown: record, RecordType: "contact"}, filter.MySQL)
	if err != nil {
		t.Fatal(err)
	}
	want := "((`crm_contacts`.`owner_id` = ? AND CONVERT(`crm_contacts`.`owner_id` USING utf8mb4) = CAST(? AS BINARY)) OR " +
		"((`crm_contacts`.`owner_id` IS NULL OR CONVERT(`crm_contacts`.`owner_id` USING utf8mb4) <> CAST(? AS BINARY)) AND " +
		"EXISTS (SELECT 1 FROM `crm_record_followers` crmauthz_f WHERE " +
		"(crmauthz_f.`record_type` = ? AND CONVERT(crmauthz_f.`record_type` USING utf8mb4) = CAST(? AS BINARY)) AND " +
		"crmauthz_f.`record_id` = `crm_contacts`.`id` AND " +
		"(crmauthz_f.`user_id` = ? AND CONVERT(crmauthz_f.`user_id` USING utf8mb4) = CAST(? AS BINARY)))))"
	if f.SQL == nil || f.SQL.Where != want || fmt.Sprint(f.SQL.Args) != "[u u u contact contact u u]" {
		t.Fatalf("%+v\nwant %s", f.SQL, want)
	}
}
