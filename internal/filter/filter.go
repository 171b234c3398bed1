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

// Input is one translation: the queries and support rules partial evaluation
// left, the unknown reference that stands for the record, and the record type
// the filter is for.
type Input struct {
	Queries    []ast.Body
	Support    []*ast.Module
	Unknown    ast.Ref
	RecordType string
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

// condition turns the queries into one condition: an OR of ANDs of atoms,
// simplified (constant parts folded away).
func (t *Translator) condition(in Input, recs mapping.Records) (node, error) {
	if len(in.Support) > 0 {
		for _, m := range in.Support {
			for _, r := range m.Rules {
				return nil, untranslatable(r, "partial evaluation left a support rule (a default, an else, or a negation or rule it could not inline): the filter can only use conditions on the record's fields")
			}
		}
	}
	if len(in.Unknown) == 0 {
		return nil, errors.New("filter: no unknown")
	}
	tr := &exprTranslator{unknown: in.Unknown, recs: recs, typ: in.RecordType}
	var ors []node
	for _, q := range in.Queries {
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
