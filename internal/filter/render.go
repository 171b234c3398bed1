package filter

import (
	"strconv"
	"strings"

	"github.com/crmauthz/crmauthz/internal/mapping"
)

// node is a condition on one record. Negation is only ever applied to atoms
// (partial evaluation negates single expressions), and each atom renders as
// SQL that is true exactly when the Rego expression holds, so SQL's NULLs
// never change a result (docs/filtering.md, "NULL").
type node interface {
	sql(c *renderCtx) string
	ucast(c *renderCtx) map[string]any
}

type (
	constant bool
	andNode  []node
	orNode   []node
	// notNode negates an atom (cmp or follows).
	notNode struct{ n node }
	// cmp: the field equals (ne: differs from) value; an absent field
	// (contact_id NULL) makes it false either way, as in Rego.
	cmp struct {
		field, value string
		ne           bool
	}
	// follows: some follower of the record is user (ne: is not user).
	follows struct {
		user string
		ne   bool
	}
)

func and(ns []node) node {
	var out andNode
	for _, n := range ns {
		switch n := n.(type) {
		case constant:
			if !n {
				return constant(false)
			}
		case andNode:
			out = append(out, n...)
		default:
			out = append(out, n)
		}
	}
	switch len(out) {
	case 0:
		return constant(true)
	case 1:
		return out[0]
	}
	return out
}

func or(ns []node) node {
	var out orNode
	for _, n := range ns {
		switch n := n.(type) {
		case constant:
			if n {
				return constant(true)
			}
		case orNode:
			out = append(out, n...)
		default:
			out = append(out, n)
		}
	}
	switch len(out) {
	case 0:
		return constant(false)
	case 1:
		return out[0]
	}
	return out
}

func not(n node) node {
	switch n := n.(type) {
	case constant:
		return !n
	case notNode:
		return n.n
	case andNode: // de Morgan, so that negation stays on atoms
		ns := make([]node, len(n))
		for i, x := range n {
			ns[i] = not(x)
		}
		return or(ns)
	case orNode:
		ns := make([]node, len(n))
		for i, x := range n {
			ns[i] = not(x)
		}
		return and(ns)
	}
	return notNode{n}
}

// renderCtx carries the tables of one translation and, for SQL, the builder.
type renderCtx struct {
	recs mapping.Records
	fol  mapping.Followers
	typ  string
	b    *sqlBuilder
}

// sqlBuilder quotes identifiers and numbers placeholders for one dialect.
type sqlBuilder struct {
	dialect Dialect
	args    []any
}

// param adds v as an argument and returns its placeholder.
func (b *sqlBuilder) param(v any) string {
	b.args = append(b.args, v)
	switch b.dialect {
	case PostgreSQL:
		return "$" + strconv.Itoa(len(b.args))
	case SQLServer:
		return "@p" + strconv.Itoa(len(b.args))
	}
	return "?"
}

// eq renders "col = value". MySQL compares in the column's collation, which
// is as a rule case- and accent-insensitive and ignores trailing spaces
// (utf8mb4_general_ci, utf8mb4_0900_ai_ci), where Rego compares strings byte
// for byte: an owner "U-1" is not "u-1". There it is col = ? (a superset, and
// what an index on col serves) AND the column's text in utf8mb4 equal, as
// bytes, to the value (docs/filtering.md, "MySQL and MariaDB").
func (b *sqlBuilder) eq(col string, v any) string {
	if b.dialect != MySQL {
		return col + " = " + b.param(v)
	}
	p := b.param(v)
	return "(" + col + " = " + p + " AND " + mysqlText(col) + " = CAST(" + b.param(v) + " AS BINARY))"
}

// ne renders "col <> value", for MySQL byte for byte (see eq).
func (b *sqlBuilder) ne(col string, v any) string {
	if b.dialect != MySQL {
		return col + " <> " + b.param(v)
	}
	return mysqlText(col) + " <> CAST(" + b.param(v) + " AS BINARY)"
}

// mysqlText is a column's value as utf8mb4 text, whatever its character set
// or type (a UUID column's text form; CAST(uuid AS BINARY) would be its 16
// bytes). Compared with a binary string, it is compared byte for byte, with
// no padding.
func mysqlText(col string) string { return "CONVERT(" + col + " USING utf8mb4)" }

// ident quotes a mapped name ("schema.table" part by part). The mapping
// admits only plain identifiers (mapping.IsIdent), so no quote character can
// occur in one.
func (b *sqlBuilder) ident(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		switch b.dialect {
		case MySQL:
			parts[i] = "`" + p + "`"
		case SQLServer:
			parts[i] = "[" + p + "]"
		default:
			parts[i] = `"` + p + `"`
		}
	}
	return strings.Join(parts, ".")
}

func (c *renderCtx) column(field string) string {
	switch field {
	case fieldID:
		return c.recs.ID
	case fieldLocationID:
		return c.recs.LocationID
	case fieldOwner:
		return c.recs.Owner
	case fieldContactID:
		return c.recs.ContactID
	}
	panic("filter: no column for field " + field)
}

func (c *renderCtx) col(field string) string {
	return c.b.ident(c.recs.Table) + "." + c.b.ident(c.column(field))
}

func (n constant) sql(*renderCtx) string {
	if n {
		return "1 = 1"
	}
	return "1 = 0"
}

func (n andNode) sql(c *renderCtx) string { return join(c, []node(n), " AND ") }
func (n orNode) sql(c *renderCtx) string  { return join(c, []node(n), " OR ") }

func join(c *renderCtx, ns []node, sep string) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = n.sql(c)
	}
	return "(" + strings.Join(parts, sep) + ")"
}

// sql renders a comparison. owner is never absent: a NULL owner is "", an
// unassigned record. contact_id NULL is an absent field. id and location_id
// are never NULL.
func (n cmp) sql(c *renderCtx) string {
	return n.render(c, false)
}

func (n notNode) sql(c *renderCtx) string {
	switch a := n.n.(type) {
	case cmp:
		return a.render(c, true)
	case follows:
		return "NOT " + a.exists(c)
	}
	panic("filter: negation of a non-atom")
}

// render renders n, or its negation: "not a == v" holds for an absent field,
// "a != v" does not.
func (n cmp) render(c *renderCtx, negated bool) string {
	col := c.col(n.field)
	eq := n.ne == negated // the comparison asked for is "=" (else "<>")
	atom := func() string {
		if eq {
			return c.b.eq(col, n.value)
		}
		return c.b.ne(col, n.value)
	}
	switch {
	case n.field == fieldOwner && n.value == "" && eq:
		return "(" + col + " IS NULL OR " + atom() + ")"
	case n.field == fieldOwner && n.value == "":
		return "(" + col + " IS NOT NULL AND " + atom() + ")"
	case n.field == fieldOwner && !eq:
		return "(" + col + " IS NULL OR " + atom() + ")"
	case n.field == fieldContactID && negated:
		return "(" + col + " IS NULL OR " + atom() + ")"
	}
	return atom()
}

// sql renders a follower test. For PostgreSQL it is
// <records>.<id> = ANY(ARRAY(SELECT <record_id> FROM <followers> WHERE …)):
// the subquery is run once (an InitPlan) and the records' primary key is
// searched for its ids, so an OR with the owner's index is a BitmapOr of two
// index scans instead of a scan of the location (BENCHMARKS.md, "Data
// filter"); like EXISTS it never repeats a record. Other dialects, and the
// negation, get the correlated EXISTS.
func (n follows) sql(c *renderCtx) string {
	if c.b.dialect != PostgreSQL {
		return n.exists(c)
	}
	f := c.fol
	op := " = "
	if n.ne {
		op = " <> "
	}
	const alias = "crmauthz_f"
	return c.col(fieldID) + " = ANY(ARRAY(SELECT " + alias + "." + c.b.ident(f.RecordID) + " FROM " + c.b.ident(f.Table) + " " + alias +
		" WHERE " + alias + "." + c.b.ident(f.RecordType) + " = " + c.b.param(c.typ) +
		" AND " + alias + "." + c.b.ident(f.UserID) + op + c.b.param(n.user) + "))"
}

// exists renders an EXISTS on the followers table, correlated with the
// record. The values are compared as eq and ne do; the record's id with the
// followers' record_id in their collation, which is exact for rows of
// existing records (the records' primary key tells apart no two ids that
// collation equates).
func (n follows) exists(c *renderCtx) string {
	f := c.fol
	const alias = "crmauthz_f"
	// The parameters are numbered in the order they are rendered.
	where := c.b.eq(alias+"."+c.b.ident(f.RecordType), c.typ) +
		" AND " + alias + "." + c.b.ident(f.RecordID) + " = " + c.col(fieldID) + " AND "
	user := alias + "." + c.b.ident(f.UserID)
	if n.ne {
		where += c.b.ne(user, n.user)
	} else {
		where += c.b.eq(user, n.user)
	}
	return "EXISTS (SELECT 1 FROM " + c.b.ident(f.Table) + " " + alias + " WHERE " + where + ")"
}

// UCAST (OPA's "all" dialect): fields are "table.column".

func (n constant) ucast(*renderCtx) map[string]any {
	// Translate folds constants away; a lone constant never reaches here.
	return map[string]any{"type": "compound", "operator": map[bool]string{true: "and", false: "or"}[bool(n)], "value": []any{}}
}

func (n andNode) ucast(c *renderCtx) map[string]any { return compound(c, "and", []node(n)) }
func (n orNode) ucast(c *renderCtx) map[string]any  { return compound(c, "or", []node(n)) }

func compound(c *renderCtx, op string, ns []node) map[string]any {
	vs := make([]any, len(ns))
	for i, n := range ns {
		vs[i] = n.ucast(c)
	}
	return map[string]any{"type": "compound", "operator": op, "value": vs}
}

func field(name, op string, v any) map[string]any {
	return map[string]any{"type": "field", "operator": op, "field": name, "value": v}
}

func (c *renderCtx) ufield(f string) string { return c.recs.Table + "." + c.column(f) }

func (n cmp) ucast(c *renderCtx) map[string]any { return n.ucastOf(c, false) }

func (n cmp) ucastOf(c *renderCtx, negated bool) map[string]any {
	col := c.ufield(n.field)
	eq := n.ne == negated
	op := "ne"
	if eq {
		op = "eq"
	}
	atom := field(col, op, n.value)
	null := func(op string) map[string]any { return field(col, op, nil) }
	either := func(a, b map[string]any) map[string]any {
		return map[string]any{"type": "compound", "operator": "or", "value": []any{a, b}}
	}
	both := func(a, b map[string]any) map[string]any {
		return map[string]any{"type": "compound", "operator": "and", "value": []any{a, b}}
	}
	switch {
	case n.field == fieldOwner && n.value == "" && eq:
		return either(null("eq"), atom)
	case n.field == fieldOwner && n.value == "":
		return both(null("ne"), atom)
	case n.field == fieldOwner && !eq:
		return either(null("eq"), atom)
	case n.field == fieldContactID && negated:
		return either(null("eq"), atom)
	}
	return atom
}

func (n notNode) ucast(c *renderCtx) map[string]any {
	switch a := n.n.(type) {
	case cmp:
		return a.ucastOf(c, true)
	case follows:
		return map[string]any{"type": "compound", "operator": "not", "value": []any{a.ucast(c)}}
	}
	panic("filter: negation of a non-atom")
}

// ucast renders following as a document "exists" over the followers table,
// whose value is the condition on its rows.
func (n follows) ucast(c *renderCtx) map[string]any {
	f := c.fol
	op := "eq"
	if n.ne {
		op = "ne"
	}
	return map[string]any{"type": "document", "operator": "exists", "field": f.Table, "value": map[string]any{
		"type": "compound", "operator": "and", "value": []any{
			field(f.Table+"."+f.RecordType, "eq", c.typ),
			field(f.Table+"."+f.RecordID, "eq", map[string]any{"field": c.ufield(fieldID)}),
			field(f.Table+"."+f.UserID, op, n.user),
		},
	}}
}
