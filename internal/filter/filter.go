// Package filter turns what partial evaluation of the policy's view rules
// leaves (policy.Partial: queries over the unknown record) into a condition an
// app adds to its own query: a SQL WHERE clause for PostgreSQL, MySQL, SQLite
// or SQL Server with every value a bound parameter, or a UCAST tree. Table and
// column names come only from the table mapping (internal/mapping); following
// is an EXISTS on the followers table. A construct it cannot translate
// exactly is an *UntranslatableError, never an approximate filter
// (docs/filtering.md).
package filter

import (
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/mapping"
)

// Dialect is the target of a filter.
type Dialect string

// The dialects.
const (
	PostgreSQL Dialect = "postgresql"
	MySQL      Dialect = "mysql"
	SQLite     Dialect = "sqlite"
	SQLServer  Dialect = "sqlserver"
	UCAST      Dialect = "ucast"
)

// Dialects lists every dialect, the default first.
var Dialects = []Dialect{PostgreSQL, MySQL, SQLite, SQLServer, UCAST}

// ParseDialect checks a dialect's name; "" is PostgreSQL.
func ParseDialect(s string) (Dialect, error) {
	if s == "" {
		return PostgreSQL, nil
	}
	for _, d := range Dialects {
		if string(d) == s {
			return d, nil
		}
	}
	return "", fmt.Errorf("dialect must be one of postgresql, mysql, sqlite, sqlserver, ucast, not %q", s)
}

// The kinds of a filter.
const (
	KindAll         = "all"
	KindNone        = "none"
	KindConditional = "conditional"
)

// SQL is a WHERE condition with its arguments, in the order of the
// placeholders.
type SQL struct {
	Where string `json:"where"`
	Args  []any  `json:"args"`
}

// Result is a filter: Kind, and for KindConditional either SQL or UCAST.
type Result struct {
	Kind  string         `json:"kind"`
	SQL   *SQL           `json:"sql,omitempty"`
	UCAST map[string]any `json:"ucast,omitempty"`
}

// UntranslatableError says which construct of the partial evaluation's result
// has no exact translation.
type UntranslatableError struct {
	Construct string // the expression or rule, as Rego
	Reason    string
}

func (e *UntranslatableError) Error() string {
	return fmt.Sprintf("the view rules cannot be translated to a filter: %s: %s", e.Construct, e.Reason)
}

// maxConstruct bounds the construct quoted in an error.
const maxConstruct = 400

func untranslatable(construct fmt.Stringer, format string, args ...any) error {
	s := construct.String()
	if len(s) > maxConstruct {
		s = s[:maxConstruct] + "…"
	}
	return &UntranslatableError{Construct: s, Reason: fmt.Sprintf(format, args...)}
}

// Config configures New.
type Config struct {
	// Mapping names the tables and columns; default mapping.Default().
	Mapping *mapping.Mapping
}

// DefaultConfig is the default schema.
func DefaultConfig() Config {
	m := mapping.Default()
	return Config{Mapping: &m}
}

// Translator translates partial evaluation results. It is safe for
// concurrent use.
type Translator struct {
	m mapping.Mapping
}

// New validates cfg's mapping and returns a Translator.
func New(cfg Config) (*Translator, error) {
	m := mapping.Default()
	if cfg.Mapping != nil {
		m = *cfg.Mapping
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &Translator{m: m}, nil
}

// Mapping returns the translator's table mapping.
func (t *Translator) Mapping() mapping.Mapping { return t.m }

// Input is one translation: what partial evaluation of the decision left
// (the branches of its else chain, or plain queries, and the support rules
// either refers to),
// the unknown reference that stands for the record, and the record type and
// location the filter is for (the app's query selects that location, so a
// condition on the record's location is known).
type Input struct {
	Branches   []Branch
	Queries    []ast.Body
	Support    []*ast.Module
	Unknown    ast.Ref
	RecordType string
	LocationID string
}

// Branch is one rule of an else chain, partially evaluated: it applies when
// one of When holds and no earlier branch applies, and then allows when one of
// Allow holds.
type Branch struct {
	When, Allow []ast.Body
}

// ErrUnknownType is returned for a record type the mapping has no table for.
var ErrUnknownType = errors.New("no table is mapped for the record type")

// Translate builds the filter of in for dialect d.
func (t *Translator) Translate(in Input, d Dialect) (Result, error) {
	recs, ok := t.m.Records(in.RecordType)
	if !ok {
		return Result{}, fmt.Errorf("%w %q", ErrUnknownType, in.RecordType)
	}
	if _, err := ParseDialect(string(d)); err != nil || d == "" {
		return Result{}, fmt.Errorf("filter: unknown dialect %q", d)
	}
	cond, err := t.condition(in, recs)
	if err != nil {
		return Result{}, err
	}
	switch c := cond.(type) {
	case constant:
		if c {
			return Result{Kind: KindAll}, nil
		}
		return Result{Kind: KindNone}, nil
	}
	ctx := &renderCtx{recs: recs, fol: t.m.Followers, typ: in.RecordType}
	if d == UCAST {
		return Result{Kind: KindConditional, UCAST: cond.ucast(ctx)}, nil
	}
	b := &sqlBuilder{dialect: d, args: []any{}}
	ctx.b = b
	where := cond.sql(ctx)
	return Result{Kind: KindConditional, SQL: &SQL{Where: where, Args: b.args}}, nil
}

// condition turns the partial evaluation into one condition, simplified
// (constant parts folded away). Queries: an OR of ANDs. Branches: the else
// chain, OR_i (NOT when_1 AND … AND NOT when_(i-1) AND allow_i).
func (t *Translator) condition(in Input, recs mapping.Records) (node, error) {
	if len(in.Unknown) == 0 {
		return nil, errors.New("filter: no unknown")
	}
	tr := &exprTranslator{unknown: in.Unknown, recs: recs, typ: in.RecordType, loc: in.LocationID}
	if err := tr.setSupport(in.Support); err != nil {
		return nil, err
	}
	if in.Branches == nil {
		return tr.queries(in.Queries)
	}
	var ors []node
	var earlier []node // NOT when of the branches before
	for _, b := range in.Branches {
		when, err := tr.queries(b.When)
		if err != nil {
			return nil, err
		}
		allow, err := tr.queries(b.Allow)
		if err != nil {
			return nil, err
		}
		ors = append(ors, and(append(append([]node{}, earlier...), allow)))
		earlier = append(earlier, not(when))
		if c, ok := and(earlier).(constant); ok && !bool(c) {
			break // an earlier branch always applies
		}
	}
	return or(ors), nil
}

// queries translates an OR of ANDs.
func (tr *exprTranslator) queries(qs []ast.Body) (node, error) {
	var ors []node
	for _, q := range qs {
		var ands []node
		for _, e := range q {
			n, err := tr.expr(e)
			if err != nil {
				return nil, err
			}
			ands = append(ands, n)
		}
		ors = append(ors, and(ands))
	}
	return or(ors), nil
}

// setSupport indexes the support rules partial evaluation saved (a negation
// it could not inline becomes "not data.partial.__notN__" and rules
// "__notN__ = true if { … }"): each must be a rule without arguments or
// else whose value is true, so that a reference to it is the OR of its bodies.
func (tr *exprTranslator) setSupport(mods []*ast.Module) error {
	tr.support = map[string][]ast.Body{}
	for _, m := range mods {
		for _, r := range m.Rules {
			if len(r.Head.Args) > 0 || r.Else != nil || r.Default || r.Head.Value == nil || !r.Head.Value.Equal(ast.BooleanTerm(true)) {
				return untranslatable(r, "partial evaluation left a support rule that is not a plain condition (a function, a default, an else or a value other than true)")
			}
			k := m.Package.Path.Extend(r.Head.Ref().GroundPrefix()).String()
			tr.support[k] = append(tr.support[k], r.Body)
		}
	}
	return nil
}
