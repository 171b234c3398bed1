package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/crmauthz/crmauthz/internal/mapping"
)

// The kinds of mapped table.
const (
	kindUsers     = "users"
	kindContacts  = "contacts"
	kindOpps      = "opportunities"
	kindFollowers = "followers"
)

// table is a mapped table as PostgreSQL names it.
type table struct {
	kind         string
	schema, name string
	oid          uint32
	// cols maps a fact field (the mapping's key) to the column's name.
	cols map[string]string
}

func (t table) ident() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// ConfigError is an error of the source's configuration (the database, the role, the mapping):
// retrying cannot fix it, so the connector stops with it.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func configErr(format string, a ...any) error { return &ConfigError{Msg: fmt.Sprintf(format, a...)} }

// mappedTables lists the mapping's tables with their fields.
func mappedTables(m mapping.Mapping) []table {
	u, c, o, f := m.Users, m.Contacts, m.Opportunities, m.Followers
	mk := func(kind, t string, cols map[string]string) table {
		schema, name := mapping.SplitTable(t)
		return table{kind: kind, schema: schema, name: name, cols: cols}
	}
	return []table{
		mk(kindUsers, u.Table, map[string]string{"id": u.ID, "role": u.Role, "location_ids": u.LocationIDs,
			"assigned_data_only": u.AssignedDataOnly, "contacts_enabled": u.ContactsEnabled, "opportunities_enabled": u.OpportunitiesEnabled}),
		mk(kindContacts, c.Table, map[string]string{"id": c.ID, "location_id": c.LocationID, "owner": c.Owner}),
		mk(kindOpps, o.Table, map[string]string{"id": o.ID, "location_id": o.LocationID, "owner": o.Owner, "contact_id": o.ContactID}),
		mk(kindFollowers, f.Table, map[string]string{"record_type": f.RecordType, "record_id": f.RecordID, "user_id": f.UserID}),
	}
}

// check verifies what the connector needs of the database (docs/postgres.md, "What PostgreSQL needs") and
// resolves the mapped tables. Every failure is a *ConfigError saying what to change.
func check(ctx context.Context, conn *pgx.Conn, m mapping.Mapping) ([]table, error) {
	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return nil, fmt.Errorf("reading wal_level: %w", err)
	}
	if walLevel != "logical" {
		return nil, configErr("wal_level is %q: logical replication needs wal_level = logical "+
			"(ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)", walLevel)
	}
	var role string
	var repl bool
	if err := conn.QueryRow(ctx, "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&role, &repl); err != nil {
		return nil, fmt.Errorf("reading the role's attributes: %w", err)
	}
	if !repl {
		return nil, configErr("the role %q has no REPLICATION attribute: ALTER ROLE %s REPLICATION (as a superuser)", role, pgx.Identifier{role}.Sanitize())
	}
	tables := mappedTables(m)
	for i := range tables {
		t := &tables[i]
		what := fmt.Sprintf("the mapping's %s.table %q", t.kind, strings.TrimPrefix(t.schema+"."+t.name, "."))
		name := pgx.Identifier{t.name}.Sanitize()
		if t.schema != "" {
			name = pgx.Identifier{t.schema, t.name}.Sanitize()
		}
		var oid *uint32
		var ident string
		err := conn.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname, c.relreplident::text FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, name).Scan(&oid, &t.schema, &t.name, &ident)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && oid == nil) {
			return nil, configErr("%s: no such table (or the role may not see it)", what)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		t.oid = *oid
		rows, err := conn.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, t.oid)
		if err != nil {
			return nil, err
		}
		have, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		for _, field := range sortedFields(t.cols) {
			if col := t.cols[field]; !slices.Contains(have, col) {
				return nil, configErr("%s has no column %q (the mapping's %s.%s); its columns: %s", what, col, t.kind, field, strings.Join(have, ", "))
			}
		}
		need := []string{t.cols["id"]}
		if t.kind == kindFollowers {
			need = []string{t.cols["record_type"], t.cols["record_id"], t.cols["user_id"]}
		}
		if err := checkIdentity(ctx, conn, *t, ident, need, what); err != nil {
			return nil, err
		}
	}
	return tables, nil
}

// checkIdentity checks that an UPDATE or DELETE of the table names the row's key: REPLICA
// IDENTITY FULL, or a primary key (or replica identity index) made of need.
func checkIdentity(ctx context.Context, conn *pgx.Conn, t table, ident string, need []string, what string) error {
	if ident == "f" {
		return nil
	}
	var cond string
	switch ident {
	case "d":
		cond = "i.indisprimary"
	case "i":
		cond = "i.indisreplident"
	default:
		return configErr("%s has REPLICA IDENTITY NOTHING: deletes would not say which row; "+
			"give it a primary key on (%s) or ALTER TABLE %s REPLICA IDENTITY FULL", what, strings.Join(need, ", "), t.ident())
	}
	rows, err := conn.Query(ctx, `SELECT a.attname FROM pg_index i JOIN pg_attribute a
		ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1 AND `+cond, t.oid)
	if err != nil {
		return err
	}
	key, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	slices.Sort(key)
	want := slices.Sorted(slices.Values(need))
	ok := slices.Equal(key, want)
	if t.kind != kindFollowers {
		ok = len(key) > 0 && slices.Contains(key, need[0])
	}
	if !ok {
		have := "no primary key"
		if len(key) > 0 {
			have = "the key (" + strings.Join(key, ", ") + ")"
		}
		return configErr("%s must identify its rows by (%s) for updates and deletes, but has %s: "+
			"make (%s) its primary key, or ALTER TABLE %s REPLICA IDENTITY FULL",
			what, strings.Join(need, ", "), have, strings.Join(need, ", "), t.ident())
	}
	return nil
}

func sortedFields(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ensurePublication creates the publication for the mapped tables when it does not exist; an
// existing one is used as it is, with a warning for what it lacks.
func (c *Connector) ensurePublication(ctx context.Context, conn *pgx.Conn, tables []table) error {
	var truncates bool
	err := conn.QueryRow(ctx, "SELECT pubtruncate FROM pg_publication WHERE pubname = $1", c.cfg.Publication).Scan(&truncates)
	if errors.Is(err, pgx.ErrNoRows) {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.ident()
		}
		sql := "CREATE PUBLICATION " + pgx.Identifier{c.cfg.Publication}.Sanitize() + " FOR TABLE " + strings.Join(names, ", ")
		if _, err := conn.Exec(ctx, sql); err != nil {
			return configErr("the publication %q does not exist and creating it failed: %v; create it as the tables' owner: %s",
				c.cfg.Publication, err, sql)
		}
		c.log.Info("created the publication", "publication", c.cfg.Publication, "tables", names)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the publication %q: %w", c.cfg.Publication, err)
	}
	if !truncates {
		c.log.Warn("the publication does not publish TRUNCATE: a truncated table's facts stay in the index", "publication", c.cfg.Publication)
	}
	rows, err := conn.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", c.cfg.Publication)
	if err != nil {
		return err
	}
	pub, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s, t string
		err := r.Scan(&s, &t)
		return s + "." + t, err
	})
	if err != nil {
		return err
	}
	for _, t := range tables {
		if !slices.Contains(pub, t.schema+"."+t.name) {
			c.log.Warn("the publication does not publish a mapped table: its changes are not seen", "publication", c.cfg.Publication, "table", t.schema+"."+t.name)
		}
	}
	return nil
}
