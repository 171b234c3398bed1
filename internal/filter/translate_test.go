package filter_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

var record = ast.MustParseRef("input.record")

func bodies(tb testing.TB, qs ...string) []ast.Body {
	tb.Helper()
	out := make([]ast.Body, len(qs))
	for i, q := range qs {
		b, err := ast.ParseBody(q)
		if err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
		out[i] = b
	}
	return out
}

func translator(tb testing.TB) *filter.Translator {
	tb.Helper()
	tr, err := filter.New(filter.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return tr
}

// TestTranslateConstructs runs each construct the translator accepts on
// SQLite and compares the rows with the construct's meaning in Rego,
// evaluated over the same records in Go.
func TestTranslateConstructs(t *testing.T) {
	recs := []refmodel.Record{
		{Type: "opportunity", ID: "o-1", LocationID: "loc-1", Owner: "u-1", Followers: []string{"u-2"}, ContactID: "c-1"},
		{Type: "opportunity", ID: "o-2", LocationID: "loc-1", Owner: "", Followers: []string{"u-1", "u-3"}},
		{Type: "opportunity", ID: "o-3", LocationID: "loc-1", Owner: "u-2", Followers: []string{}, ContactID: "c-2"},
		{Type: "opportunity", ID: "o-4", LocationID: "loc-1", Owner: "", Followers: []string{}}, // owner NULL in SQL
		{Type: "opportunity", ID: "o-5", LocationID: "loc-1", Owner: "u-3", Followers: []string{"u-1"}, ContactID: "c-1"},
	}
	m := refmodel.New()
	for _, r := range recs {
		m.Records[refmodel.Key{Type: r.Type, ID: r.ID}] = r
	}
	db := openSQLite(t)
	loadDB(t, db, mapping.Default(), liteStyle, m)
	tr := translator(t)
	tests := []struct {
		name    string
		queries []string
		want    []string
	}{
		{"owner", []string{`input.record.owner == "u-1"`}, []string{"o-1"}},
		{"unassigned (NULL or \"\")", []string{`input.record.owner == ""`}, []string{"o-2", "o-4"}},
		{"assigned", []string{`input.record.owner != ""`}, []string{"o-1", "o-3", "o-5"}},
		{"not the owner", []string{`not input.record.owner == "u-1"`}, []string{"o-2", "o-3", "o-4", "o-5"}},
		{"not unassigned", []string{`not input.record.owner == ""`}, []string{"o-1", "o-3", "o-5"}},
		{"follower", []string{`"u-1" in input.record.followers`}, []string{"o-2", "o-5"}},
		{"follower by iteration", []string{`input.record.followers[_] == "u-1"`}, []string{"o-2", "o-5"}},
		{"a follower other than", []string{`input.record.followers[x] != "u-1"`}, []string{"o-1", "o-2"}},
		{"not a follower", []string{`not "u-1" in input.record.followers`}, []string{"o-1", "o-3", "o-4"}},
		{"contact", []string{`input.record.contact_id == "c-1"`}, []string{"o-1", "o-5"}},
		{"contact differs (absent: undefined)", []string{`input.record.contact_id != "c-1"`}, []string{"o-3"}},
		{"not that contact (absent: holds)", []string{`not input.record.contact_id == "c-1"`}, []string{"o-2", "o-3", "o-4"}},
		{"not another contact", []string{`not input.record.contact_id != "c-1"`}, []string{"o-1", "o-2", "o-4", "o-5"}},
		{"id in a set", []string{`input.record.id in {"o-2", "o-3", "x' OR 1=1 --"}`}, []string{"o-2", "o-3"}},
		{"id not in an array", []string{`not input.record.id in ["o-2", "o-3"]`}, []string{"o-1", "o-4", "o-5"}},
		{"type is known", []string{`input.record.type == "opportunity"`, `input.record.owner == "u-1"`}, []string{"o-1", "o-2", "o-3", "o-4", "o-5"}},
		{"another type", []string{`input.record.type == "contact"`}, []string{}},
		{"and, or", []string{`input.record.owner == "u-3"; "u-1" in input.record.followers`, `input.record.id == "o-3"`}, []string{"o-3", "o-5"}},
		{"location", []string{`input.record.location_id == "loc-2"`}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range []filter.Dialect{filter.SQLite, filter.PostgreSQL, filter.MySQL, filter.SQLServer, filter.UCAST} {
				f, err := tr.Translate(filter.Input{Queries: bodies(t, tt.queries...), Unknown: record, RecordType: "opportunity"}, d)
				if err != nil {
					t.Fatalf("%s: %v", d, err)
				}
				if d != filter.SQLite {
					continue
				}
				rm, _ := tr.Mapping().Records("opportunity")
				got := selected(t, database{"sqlite", d, db, liteStyle}, rm, "loc-1", f)
				if !slices.Equal(got, tt.want) {
					t.Fatalf("%+v (%+v) selects %q, want %q", f, f.SQL, got, tt.want)
				}
			}
		})
	}
}

func TestTranslateKinds(t *testing.T) {
	tr := translator(t)
	for _, tt := range []struct {
		name    string
		queries []ast.Body
		want    string
	}{
		{"no query", nil, filter.KindNone},
		{"an empty query", []ast.Body{{}}, filter.KindAll},
		{"one empty query of several", append(bodies(t, `input.record.owner == "u"`), ast.Body{}), filter.KindAll},
		{"a false constant", bodies(t, `input.record.type == "contact"`), filter.KindNone},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range filter.Dialects {
				f, err := tr.Translate(filter.Input{Queries: tt.queries, Unknown: record, RecordType: "opportunity"}, d)
				if err != nil || f.Kind != tt.want || f.SQL != nil || f.UCAST != nil {
					t.Fatalf("%s: %+v %v, want %s", d, f, err, tt.want)
				}
			}
		})
	}
}

func TestTranslateRefuses(t *testing.T) {
	tr := translator(t)
	for _, tt := range []struct {
		name, query, mentions string
	}{
		{"a built-in", `startswith(input.record.id, "c")`, "startswith"},
		{"a nested call", `count(input.record.followers) > 3`, "count"},
		{"an unmapped field", `input.record.stage == "won"`, "stage"},
		{"two fields", `input.record.owner == input.record.id`, "one field of the record and one constant"},
		{"a number", `input.record.owner == 5`, "only strings"},
		{"a follower by position", `input.record.followers[0] == "u"`, "position"},
		{"the followers as a value", `input.record.followers == []`, "followers"},
		{"a variable", `input.record.owner == x`, "variable"},
		{"another unknown", `input.user.id == "u"`, "neither the record"},
		{"a bare reference", `input.record.flag`, "neither a condition on the record"},
		{"a reference to no support rule", `data.partial.__not0_0_1__`, "nor a rule partial evaluation saved"},
		{"with", `input.record.owner == "u" with input.x as 1`, "with"},
		{"a follower that is a field", `input.record.owner in input.record.followers`, "constant string"},
		{"membership in a non-constant", `input.record.owner in input.record.id`, "only the followers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tr.Translate(filter.Input{Queries: bodies(t, tt.query), Unknown: record, RecordType: "contact"}, filter.PostgreSQL)
			var ue *filter.UntranslatableError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.mentions) {
				t.Fatalf("err %v, want an UntranslatableError mentioning %q", err, tt.mentions)
			}
		})
	}
	t.Run("a support rule", func(t *testing.T) {
		mod := ast.MustParseModule("package partial.x\n\np := \"yes\" if input.record.owner == \"u\"\n")
		_, err := tr.Translate(filter.Input{Queries: bodies(t, `data.partial.x.p`), Support: []*ast.Module{mod}, Unknown: record, RecordType: "contact"}, filter.SQLite)
		var ue *filter.UntranslatableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "support rule") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("an unknown type or dialect", func(t *testing.T) {
		if _, err := tr.Translate(filter.Input{Queries: nil, Unknown: record, RecordType: "invoice"}, filter.SQLite); !errors.Is(err, filter.ErrUnknownType) {
			t.Fatalf("err %v", err)
		}
		if _, err := tr.Translate(filter.Input{Queries: nil, Unknown: record, RecordType: "contact"}, "oracle"); err == nil {
			t.Fatal("no error for dialect oracle")
		}
	})
}

func TestParseDialect(t *testing.T) {
	for in, want := range map[string]filter.Dialect{"": filter.PostgreSQL, "mysql": filter.MySQL, "ucast": filter.UCAST, "sqlserver": filter.SQLServer} {
		if d, err := filter.ParseDialect(in); err != nil || d != want {
			t.Errorf("%q: %v %v", in, d, err)
		}
	}
	for _, in := range []string{"postgres", "SQLite", "oracle", " mysql"} {
		if _, err := filter.ParseDialect(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// BenchmarkTranslate measures the translation alone of a restricted user's
// partial evaluation result (owner, or follower and not owner).
func BenchmarkTranslate(b *testing.B) {
	tr := translator(b)
	qs := bodies(b, `input.record.owner = "u-1"`, `not input.record.owner = "u-1"; internal.member_2("u-1", input.record.followers)`)
	for _, d := range []filter.Dialect{filter.PostgreSQL, filter.UCAST} {
		b.Run(string(d), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Translate(filter.Input{Queries: qs, Unknown: record, RecordType: "contact"}, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An else chain: a branch applies when its condition holds and no earlier
// one's does; the support rules of a negation are ORs of their bodies; the
// record's existence, its type and its location are known.
func TestTranslateChain(t *testing.T) {
	tr := translator(t)
	notIn := ast.MustParseModule("package partial\n\n__not0_0_1__ = true if { input.record.owner == \"x\" }\n__not0_0_1__ = true if { input.record.location_id == \"loc-9\" }\n")
	chain := []filter.Branch{
		// not record -> record_not_found: every row is a record
		{When: bodies(t, `not input.record`)},
		// a refusal under a negation partial evaluation saved
		{When: bodies(t, `data.partial.__not0_0_1__`)},
		// a refusal that never applies to this type or location
		{When: bodies(t, `input.record.type == "opportunity"`, `input.record.location_id == "loc-2"`)},
		// owner -> allow
		{When: bodies(t, `input.record.owner == "u"`), Allow: bodies(t, `input.record.owner == "u"`)},
		// unassigned -> deny, before the followers
		{When: bodies(t, `input.record.owner == ""`)},
		// follower -> allow
		{When: bodies(t, `"u" in input.record.followers`), Allow: bodies(t, `"u" in input.record.followers`)},
		// default deny
		{When: bodies(t, ``)},
		// never reached
		{When: bodies(t, ``), Allow: bodies(t, ``)},
	}
	f, err := tr.Translate(filter.Input{Branches: chain, Support: []*ast.Module{notIn}, Unknown: record, RecordType: "contact", LocationID: "loc-1"}, filter.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != filter.KindConditional || f.SQL == nil {
		t.Fatalf("%+v", f)
	}
	// owner (not under the saved negation) or follower (not under it, not
	// the owner, not unassigned).
	notX := `("crm_contacts"."owner_id" IS NULL OR "crm_contacts"."owner_id" <> ?)`
	want := `((` + notX + ` AND "crm_contacts"."owner_id" = ?) OR (` + notX + ` AND ` + notX + ` AND ("crm_contacts"."owner_id" IS NOT NULL AND "crm_contacts"."owner_id" <> ?) AND EXISTS (SELECT 1 FROM "crm_record_followers" crmauthz_f WHERE crmauthz_f."record_type" = ? AND crmauthz_f."record_id" = "crm_contacts"."id" AND crmauthz_f."user_id" = ?)))`
	if f.SQL.Where != want || fmt.Sprint(f.SQL.Args) != "[x u x u  contact u]" {
		t.Errorf("where %s %q\nwant  %s", f.SQL.Where, f.SQL.Args, want)
	}
	for _, tt := range []struct {
		name  string
		chain []filter.Branch
		want  string
	}{
		{"the first branch always applies", []filter.Branch{{When: bodies(t, ``), Allow: bodies(t, ``)}, {When: bodies(t, ``)}}, filter.KindAll},
		{"a deny always applies", []filter.Branch{{When: bodies(t, `input.record`)}, {When: bodies(t, ``), Allow: bodies(t, ``)}}, filter.KindNone},
		{"no branch", []filter.Branch{}, filter.KindNone},
		{"another location", []filter.Branch{{When: bodies(t, `input.record.location_id == "loc-2"`), Allow: bodies(t, `input.record.location_id == "loc-2"`)}}, filter.KindNone},
		{"a contact has no contact_id", []filter.Branch{{When: bodies(t, `input.record.contact_id != ""`), Allow: bodies(t, `input.record.contact_id != ""`)}}, filter.KindNone},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tr.Translate(filter.Input{Branches: tt.chain, Unknown: record, RecordType: "contact", LocationID: "loc-1"}, filter.PostgreSQL)
			if err != nil || f.Kind != tt.want {
				t.Fatalf("%+v %v, want %s", f, err, tt.want)
			}
		})
	}
}
