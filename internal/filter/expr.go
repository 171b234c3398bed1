package filter

import (
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/mapping"
)

// The record's fields a filter can use (the record object of crm.record,
// docs/policies.md): type is the filter's record type, followers the rows of
// the followers table; the others are columns of the records table.
const (
	fieldID         = "id"
	fieldLocationID = "location_id"
	fieldOwner      = "owner"
	fieldContactID  = "contact_id"
	fieldType       = "type"
	fieldFollowers  = "followers"
)

// exprTranslator translates one expression of a partial evaluation's query.
type exprTranslator struct {
	unknown ast.Ref
	recs    mapping.Records
	typ     string
	loc     string                // the filter's location; "" when not known
	support map[string][]ast.Body // the support rules, by reference
}

// operand is one side of a comparison: a field of the record, a follower
// (followers[_]), or a constant.
type operand struct {
	field    string // a column field, or fieldType
	follower bool
	value    ast.Value // constant; nil for a field or a follower
}

func (tr *exprTranslator) expr(e *ast.Expr) (node, error) {
	if len(e.With) > 0 {
		return nil, untranslatable(e, "\"with\" cannot be translated")
	}
	if t, ok := e.Terms.(*ast.Term); ok {
		n, err := tr.term(e, t)
		if err != nil {
			return nil, err
		}
		if e.Negated {
			return not(n), nil
		}
		return n, nil
	}
	if !e.IsCall() {
		return nil, untranslatable(e, "only comparisons (==, !=, =) and membership (in) of the record's fields can be translated")
	}
	op := e.OperatorTerm().Value.(ast.Ref).String()
	ops := e.Operands()
	if len(ops) != 2 {
		return nil, untranslatable(e, "the built-in %s cannot be translated", op)
	}
	for _, o := range ops {
		if call, ok := o.Value.(ast.Call); ok {
			return nil, untranslatable(e, "the built-in %v cannot be translated (only ==, !=, = and in on the record's fields)", call[0])
		}
	}
	var n node
	var err error
	switch op {
	case ast.Equality.Name, ast.Equal.Name:
		n, err = tr.compare(e, ops[0], ops[1], false)
	case ast.NotEqual.Name:
		n, err = tr.compare(e, ops[0], ops[1], true)
	case ast.Member.Name:
		n, err = tr.member(e, ops[0], ops[1])
	default:
		return nil, untranslatable(e, "the built-in %s cannot be translated (only ==, !=, = and in)", op)
	}
	if err != nil {
		return nil, err
	}
	if e.Negated {
		return not(n), nil
	}
	return n, nil
}

// term translates an expression that is one term: the record itself (it
// exists: the row is there), or a support rule.
func (tr *exprTranslator) term(e *ast.Expr, t *ast.Term) (node, error) {
	r, ok := t.Value.(ast.Ref)
	if !ok {
		return nil, untranslatable(e, "only comparisons (==, !=, =) and membership (in) of the record's fields can be translated")
	}
	if r.Equal(tr.unknown) {
		return constant(true), nil // every row the query scans is a record
	}
	if bodies, ok := tr.support[r.String()]; ok {
		return tr.queries(bodies)
	}
	return nil, untranslatable(e, "%v is neither a condition on the record (%v) nor a rule partial evaluation saved", r, tr.unknown)
}

// operand classifies a term: a reference to a field of the unknown record, a
// reference to one of its followers, or a ground scalar.
func (tr *exprTranslator) operand(e *ast.Expr, t *ast.Term) (operand, error) {
	switch v := t.Value.(type) {
	case ast.Ref:
		if !v.HasPrefix(tr.unknown) {
			return operand{}, untranslatable(e, "%v is neither the record (%v) nor a constant", v, tr.unknown)
		}
		rest := v[len(tr.unknown):]
		if len(rest) == 0 {
			return operand{}, untranslatable(e, "the record as a whole cannot be compared")
		}
		key, ok := rest[0].Value.(ast.String)
		if !ok {
			return operand{}, untranslatable(e, "%v: the record's field must be named", v)
		}
		f := string(key)
		switch {
		case f == fieldFollowers && len(rest) == 2:
			if _, ok := rest[1].Value.(ast.Var); ok {
				return operand{follower: true}, nil
			}
			return operand{}, untranslatable(e, "%v: a follower at a given position cannot be translated (followers are a set)", v)
		case f == fieldFollowers:
			return operand{}, untranslatable(e, "%v: the followers can only be tested for a member (x in followers, followers[_] == x)", v)
		case len(rest) > 1:
			return operand{}, untranslatable(e, "%v: the field %s has no parts", v, f)
		case f == fieldType:
			return operand{field: f}, nil
		case f == fieldID, f == fieldLocationID, f == fieldOwner:
			return operand{field: f}, nil
		case f == fieldContactID:
			// No column: the records of the type have no contact_id
			// (contacts), and a comparison with it is false (compare).
			return operand{field: f}, nil
		}
		return operand{}, untranslatable(e, "%v: the record's field %q is not mapped to a column", v, f)
	case ast.String:
		return operand{value: v}, nil
	case ast.Var:
		return operand{}, untranslatable(e, "the variable %v cannot be translated (partial evaluation left a value it does not know)", v)
	}
	if ast.IsScalar(t.Value) {
		return operand{}, untranslatable(e, "%v: only strings can be compared with the record's fields (ids are strings)", t)
	}
	return operand{}, untranslatable(e, "%v cannot be translated", t)
}

// compare translates a == b (negated: a != b).
func (tr *exprTranslator) compare(e *ast.Expr, a, b *ast.Term, ne bool) (node, error) {
	x, err := tr.operand(e, a)
	if err != nil {
		return nil, err
	}
	y, err := tr.operand(e, b)
	if err != nil {
		return nil, err
	}
	if x.value != nil {
		x, y = y, x
	}
	if x.value != nil || y.value == nil {
		return nil, untranslatable(e, "a comparison needs one field of the record and one constant")
	}
	v := string(y.value.(ast.String))
	switch {
	case x.follower:
		return follows{user: v, ne: ne}, nil
	case x.field == fieldType:
		// The record type is the filter's: the comparison is known.
		return constant((tr.typ == v) != ne), nil
	case x.field == fieldContactID && tr.recs.ContactID == "":
		// An absent field: neither equal nor different, as in Rego.
		return constant(false), nil
	case x.field == fieldLocationID && tr.loc != "":
		// So is the location: the query selects it.
		return constant((tr.loc == v) != ne), nil
	}
	return cmp{field: x.field, value: v, ne: ne}, nil
}

// member translates x in xs: a constant in the followers, or a field in a
// collection of constants.
func (tr *exprTranslator) member(e *ast.Expr, a, b *ast.Term) (node, error) {
	if r, ok := b.Value.(ast.Ref); ok && r.HasPrefix(tr.unknown) {
		rest := r[len(tr.unknown):]
		if len(rest) == 1 && rest[0].Value.Compare(ast.String(fieldFollowers)) == 0 {
			s, ok := a.Value.(ast.String)
			if !ok {
				return nil, untranslatable(e, "only a constant string can be tested for membership in the followers")
			}
			return follows{user: string(s)}, nil
		}
		return nil, untranslatable(e, "%v: only the followers can be tested for a member", r)
	}
	x, err := tr.operand(e, a)
	if err != nil {
		return nil, err
	}
	if x.value != nil || x.follower {
		return nil, untranslatable(e, "membership needs a field of the record on the left")
	}
	var elems []*ast.Term
	switch c := b.Value.(type) {
	case *ast.Array:
		c.Foreach(func(t *ast.Term) { elems = append(elems, t) })
	case ast.Set:
		c.Foreach(func(t *ast.Term) { elems = append(elems, t) })
	default:
		return nil, untranslatable(e, "membership needs a constant array or set on the right")
	}
	var ors []node
	for _, t := range elems {
		n, err := tr.compare(e, a, t, false)
		if err != nil {
			return nil, err
		}
		ors = append(ors, n)
	}
	return or(ors), nil
}
