package filter_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/mapping"
	"github.com/crmauthz/crmauthz/internal/mysqltest"
	"github.com/crmauthz/crmauthz/internal/pgtest"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/refmodel"
	"github.com/crmauthz/crmauthz/policies"
)

// database is one database holding a world, and how to ask it.
type database struct {
	name    string
	dialect filter.Dialect
	db      *sql.DB
	st      style
}

func openSQLite(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", filepath.Join(tb.TempDir(), "crm.db"))
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	tb.Cleanup(func() { db.Close() })
	return db
}

func openPostgres(tb testing.TB, srv *pgtest.Server, dbName string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", srv.DSN("postgres", dbName))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		tb.Fatal(err)
	}
	return db
}

// engineFor loads the default policy, with the replacements edit applies to
// authz.rego (old, new, old, new, …; each must occur).
func engineFor(tb testing.TB, edit ...string) *policy.Engine {
	tb.Helper()
	if len(edit) == 0 {
		e, err := policy.New(policy.Config{FS: policies.FS})
		if err != nil {
			tb.Fatal(err)
		}
		return e
	}
	dir := tb.TempDir()
	err := fs.WalkDir(policies.FS, "crmauthz", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		b, err := policies.FS.ReadFile(p)
		if err != nil {
			return err
		}
		s := string(b)
		if filepath.Base(p) == "authz.rego" {
			for i := 0; i+1 < len(edit); i += 2 {
				if !strings.Contains(s, edit[i]) {
					return fmt.Errorf("authz.rego has no %q", edit[i])
				}
				s = strings.Replace(s, edit[i], edit[i+1], 1)
			}
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(p)), []byte(s), 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := policy.New(policy.Config{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// filterOf asks the engine and the translator, as the server does.
func filterOf(tb testing.TB, eng *policy.Engine, ix *index.Index, tr *filter.Translator, subject, typ, loc string, d filter.Dialect) (filter.Result, error) {
	tb.Helper()
	var res filter.Result
	err := ix.View(func(tx *index.ReadTx) error {
		p, _, err := eng.PartialView(context.Background(), tx, policy.FilterInput{Subject: subject, Type: typ, LocationID: loc})
		if err != nil {
			return err
		}
		if len(p.Unknowns) != 1 {
			return fmt.Errorf("unknowns %v", p.Unknowns)
		}
		res, err = tr.Translate(inputOf(p, typ, loc), d)
		return err
	})
	return res, err
}

// inputOf is the translation's input for a partial evaluation, as the server
// builds it.
func inputOf(p *policy.Partial, typ, loc string) filter.Input {
	in := filter.Input{Branches: []filter.Branch{}, Support: p.Support, Unknown: p.Unknowns[0], RecordType: typ, LocationID: loc}
	for _, b := range p.Branches {
		in.Branches = append(in.Branches, filter.Branch{When: b.When, Allow: b.Allow})
	}
	return in
}

// selected runs SELECT id FROM <records> WHERE <location> = loc AND (<where>).
func selected(tb testing.TB, dbase database, rm mapping.Records, loc string, f filter.Result) []string {
	tb.Helper()
	q, ph := dbase.st.quote, dbase.st.ph
	var stmt string
	var args []any
	switch f.Kind {
	case filter.KindNone:
		return []string{}
	case filter.KindAll:
		stmt, args = fmt.Sprintf("SELECT %s FROM %s WHERE %s = %s", q(rm.ID), q(rm.Table), q(rm.LocationID), ph(1)), []any{loc}
	case filter.KindConditional:
		args = append([]any{}, f.SQL.Args...)
		locPH := ph(len(args) + 1)
		if dbase.dialect != filter.PostgreSQL {
			args = append([]any{loc}, args...)
		} else {
			args = append(args, loc)
		}
		stmt = fmt.Sprintf("SELECT %s FROM %s WHERE %s = %s AND (%s)", q(rm.ID), q(rm.Table), q(rm.LocationID), locPH, f.SQL.Where)
	default:
		tb.Fatalf("kind %q", f.Kind)
	}
	rows, err := dbase.db.Query(stmt, args...)
	if err != nil {
		tb.Fatalf("%s %q: %v", stmt, args, err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			tb.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// checkExact compares, for every subject, type and location, the rows the
// filter selects with the records whose view decision is allow.
func checkExact(t testing.TB, eng *policy.Engine, ix *index.Index, tr *filter.Translator, m *refmodel.Model, dbs []database) {
	t.Helper()
	ctx := context.Background()
	subjects := append(m.UserIDs(), "ghost", `ghost' OR 1=1 --`)
	kinds := map[string]int{}
	for _, s := range subjects {
		// The records the decision lets s view, by type and location.
		want := map[[2]string][]string{}
		err := ix.View(func(tx *index.ReadTx) error {
			for _, k := range m.Keys() {
				r := m.Records[k]
				d, _, err := eng.Decide(ctx, tx, policy.Input{Subject: s, Action: "view", ResourceType: k.Type, ResourceID: k.ID})
				if err != nil {
					return err
				}
				if d.Allow {
					want[[2]string{k.Type, r.LocationID}] = append(want[[2]string{k.Type, r.LocationID}], k.ID)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range []string{refmodel.TypeContact, refmodel.TypeOpportunity} {
			rm, _ := tr.Mapping().Records(typ)
			for _, loc := range append(slices.Clone(locations), "loc-none") {
				w := want[[2]string{typ, loc}]
				if w == nil {
					w = []string{}
				}
				slices.Sort(w)
				for _, dbase := range dbs {
					f, err := filterOf(t, eng, ix, tr, s, typ, loc, dbase.dialect)
					if err != nil {
						t.Fatalf("%s %s %s: %v", s, typ, loc, err)
					}
					kinds[f.Kind]++
					if got := selected(t, dbase, rm, loc, f); !slices.Equal(got, w) {
						t.Fatalf("%s: subject %q, %s in %s: the filter %+v (sql %+v) selects\n%q\nthe decisions allow\n%q", dbase.name, s, typ, loc, f, f.SQL, got, w)
					}
				}
			}
		}
	}
	for _, k := range []string{filter.KindAll, filter.KindNone, filter.KindConditional} {
		if kinds[k] == 0 {
			t.Errorf("no filter of kind %s in %v: the world tests too little", k, kinds)
		}
	}
	t.Logf("filters checked: %v", kinds)
}

// renamed is a mapping file with other names for every table and column.
func renamed(tb testing.TB, schema string) mapping.Mapping {
	tb.Helper()
	m, err := mapping.Parse([]byte(fmt.Sprintf(`
contacts: {table: %[1]speople, id: person_key, location_id: sub_account, owner: assigned_to}
opportunities: {table: %[1]sdeals, id: deal_key, location_id: sub_account, owner: assigned_to, contact_id: person}
followers: {table: %[1]swatchers, record_type: kind, record_id: ref, user_id: watcher}
`, schema)))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestExactness(t *testing.T) {
	m := world(t, 1, 200)
	ix := loadIndex(t, m)
	def := mapping.Default()
	tr, err := filter.New(filter.Config{Mapping: &def})
	if err != nil {
		t.Fatal(err)
	}
	lite := openSQLite(t)
	loadDB(t, lite, def, liteStyle, m)
	srv := pgtest.Start(t, pgtest.Options{})
	pg := openPostgres(t, srv, "postgres")
	loadDB(t, pg, def, pgStyle, m)
	// MariaDB for the mysql dialect, its tables in the server's default
	// collation (Debian's utf8mb4_general_ci: case- and accent-insensitive).
	my := mysqltest.New(t, mysqltest.DefaultConfig())
	maria := my.DB(t, "crm")
	loadDB(t, maria, def, myStyle, m)
	dbs := []database{{"sqlite", filter.SQLite, lite, liteStyle}, {"postgresql", filter.PostgreSQL, pg, pgStyle}, {"mariadb", filter.MySQL, maria, myStyle}}

	t.Run("default policy", func(t *testing.T) {
		checkExact(t, engineFor(t), ix, tr, m, dbs)
	})
	small := world(t, 2, 60)
	smallIx := loadIndex(t, small)
	smallLite := openSQLite(t)
	loadDB(t, smallLite, def, liteStyle, small)
	if _, err := pg.Exec(`CREATE DATABASE small`); err != nil {
		t.Fatal(err)
	}
	smallPG := openPostgres(t, srv, "small")
	loadDB(t, smallPG, def, pgStyle, small)
	smallMaria := my.DB(t, "small")
	loadDB(t, smallMaria, def, myStyle, small)
	smallDBs := []database{{"sqlite", filter.SQLite, smallLite, liteStyle}, {"postgresql", filter.PostgreSQL, smallPG, pgStyle}, {"mariadb", filter.MySQL, smallMaria, myStyle}}
	t.Run("renamed schema", func(t *testing.T) {
		if _, err := smallPG.Exec(`CREATE SCHEMA app`); err != nil {
			t.Fatal(err)
		}
		// A MySQL schema is a database; this one in another collation of
		// equal case- and accent-folding.
		my.Exec(t, "CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
		pgMap, liteMap := renamed(t, "app."), renamed(t, "")
		loadDB(t, smallPG, pgMap, pgStyle, small)
		loadDB(t, smallLite, liteMap, liteStyle, small)
		loadDB(t, smallMaria, pgMap, myStyle, small)
		trSchema, err := filter.New(filter.Config{Mapping: &pgMap})
		if err != nil {
			t.Fatal(err)
		}
		trLite, err := filter.New(filter.Config{Mapping: &liteMap})
		if err != nil {
			t.Fatal(err)
		}
		eng := engineFor(t)
		checkExact(t, eng, smallIx, trSchema, small, []database{{"postgresql", filter.PostgreSQL, smallPG, pgStyle}, {"mariadb", filter.MySQL, smallMaria, myStyle}})
		checkExact(t, eng, smallIx, trLite, small, []database{{"sqlite", filter.SQLite, smallLite, liteStyle}})
	})
	variants := []struct {
		name string
		edit []string
	}{
		{"followers may not view", []string{`input.action in {"view", "edit"}`, `input.action in {"edit"}`}},
		{"following counts only on assigned records", []string{"follows(user_id, rec) if user_id in rec.followers",
			"follows(user_id, rec) if {\n\tuser_id in rec.followers\n\trec.owner != \"\"\n}"}},
		{"admins are restricted", []string{`is_admin(user) if user.role == "admin"`, `is_admin(user) if user.role == "superadmin"`}},
		// A new branch of the decision's chain, and nothing else: the filter
		// follows it (it is derived from the chain, docs/filtering.md).
		{"a new branch: users may view opportunities linked to a contact", []string{"} else := {\"allow\": false, \"reason\": \"not_assigned\"}",
			"} else := {\"allow\": true, \"reason\": \"linked\"} if {\n\tinput.action == \"view\"\n\tsubject.role == \"user\"\n\trecord.contact_id != \"\"\n} else := {\"allow\": false, \"reason\": \"not_assigned\"}"}},
		// A branch whose value is undefined for a view does not apply: the
		// followers still view.
		{"a new branch whose value is undefined for a view", []string{"} else := follower_decision if {",
			"} else := edit_only_refusal if {\n\tfollows(input.subject, record)\n} else := follower_decision if {",
			"# allow is the boolean", "edit_only_refusal := {\"allow\": false, \"reason\": \"x\"} if input.action == \"edit\"\n\n# allow is the boolean"}},
		{"a new branch: followers of unassigned records may not view them", []string{"} else := follower_decision if {",
			"} else := {\"allow\": false, \"reason\": \"unassigned\"} if {\n\trecord.owner == \"\"\n\tinput.action == \"view\"\n} else := follower_decision if {"}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			checkExact(t, engineFor(t, v.edit...), smallIx, tr, small, smallDBs)
		})
	}
}
