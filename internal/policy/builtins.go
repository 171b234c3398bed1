package policy

import (
	"context"
	"errors"
	"fmt"

	"github.com/crmauthz/crmauthz/internal/policy/guard"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/types"
)

// Names of the built-in functions that read the facts.
const (
	BuiltinUser   = "crm.user"
	BuiltinRecord = "crm.record"
)

// ErrNoFacts is the error of crm.user and crm.record when the evaluation's
// context carries no Facts (see WithFacts). Decide and Query always add them.
var ErrNoFacts = errors.New("no facts in the evaluation context")

// Facts is one consistent view of the index for one decision
// (regovalue.Facts; the server passes an index read transaction).
type Facts = regovalue.Facts

type factsKey struct{}

// WithFacts returns a context that carries facts for the crm.* built-ins.
// Decide and Query call it themselves; it is exported for callers that
// evaluate with Builtins() through the rego package directly.
func WithFacts(ctx context.Context, facts Facts) context.Context {
	return context.WithValue(ctx, factsKey{}, facts)
}

func factsFrom(ctx context.Context) (Facts, error) {
	if ctx != nil {
		if f, ok := ctx.Value(factsKey{}).(Facts); ok && f != nil {
			return f, nil
		}
	}
	return nil, ErrNoFacts
}

func factObjectType() types.Type {
	return types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))
}

func userFunction() *rego.Function {
	return &rego.Function{
		Name:        BuiltinUser,
		Description: "Returns the user with the given id from the crmauthz index; undefined if absent.",
		Decl: types.NewFunction(
			types.Args(types.Named("id", types.S).Description("user id")),
			types.Named("user", factObjectType()).Description(
				`{"id", "role", "location_ids", "assigned_data_only", "contacts_enabled", "opportunities_enabled"}`),
		),
		Memoize: true,
	}
}

func recordFunction() *rego.Function {
	return &rego.Function{
		Name:        BuiltinRecord,
		Description: "Returns the record of the given type and id from the crmauthz index; undefined if absent.",
		Decl: types.NewFunction(
			types.Args(
				types.Named("type", types.S).Description(`record type, e.g. "contact" or "opportunity"`),
				types.Named("id", types.S).Description("record id"),
			),
			types.Named("record", factObjectType()).Description(
				`{"type", "id", "location_id", "owner", "followers", "contact_id"?}`),
		),
		Memoize: true,
	}
}

// BuiltinDecls returns the declarations of crm.user and crm.record, for
// compilers and capabilities (a policy using them does not compile without).
func BuiltinDecls() []*ast.Builtin {
	fns := []*rego.Function{userFunction(), recordFunction()}
	decls := make([]*ast.Builtin, len(fns))
	for i, f := range fns {
		decls[i] = &ast.Builtin{Name: f.Name, Description: f.Description, Decl: f.Decl}
	}
	return append(decls, guard.Decls()...)
}

// Builtins returns the rego options that register crm.user and crm.record.
// They read the Facts from the evaluation's context (WithFacts).
func Builtins() []func(*rego.Rego) {
	impl := newBuiltinImpl()
	return append([]func(*rego.Rego){
		rego.Function1(userFunction(), impl.user),
		rego.Function2(recordFunction(), impl.record),
	}, guard.RegoFuncs()...)
}

// testerBuiltins returns the built-ins for v1/tester runners.
func testerBuiltins() []*tester.Builtin {
	impl := newBuiltinImpl()
	u, r := userFunction(), recordFunction()
	return append([]*tester.Builtin{
		{Decl: &ast.Builtin{Name: u.Name, Description: u.Description, Decl: u.Decl}, Func: rego.Function1(u, impl.user)},
		{Decl: &ast.Builtin{Name: r.Name, Description: r.Description, Decl: r.Decl}, Func: rego.Function2(r, impl.record)},
	}, guard.TesterBuiltins()...)
}

// builtinImpl implements the built-ins; its intern table is read-only.
type builtinImpl struct {
	intern internTable
}

func newBuiltinImpl() *builtinImpl {
	return &builtinImpl{intern: newInternTable()}
}

func (b *builtinImpl) user(bctx rego.BuiltinContext, id *ast.Term) (*ast.Term, error) {
	s, ok := id.Value.(ast.String)
	if !ok {
		return nil, nil // not a string: no such user
	}
	facts, err := factsFrom(bctx.Context)
	if err != nil {
		return nil, err
	}
	js, err := facts.UserJSON(string(s))
	if err != nil {
		return nil, fmt.Errorf("reading user %q: %w", string(s), err)
	}
	return b.convert(js, "user", string(s))
}

func (b *builtinImpl) record(bctx rego.BuiltinContext, typ, id *ast.Term) (*ast.Term, error) {
	t, ok := typ.Value.(ast.String)
	if !ok {
		return nil, nil
	}
	s, ok := id.Value.(ast.String)
	if !ok {
		return nil, nil
	}
	facts, err := factsFrom(bctx.Context)
	if err != nil {
		return nil, err
	}
	js, err := facts.RecordJSON(string(t), string(s))
	if err != nil {
		return nil, fmt.Errorf("reading record %s/%s: %w", string(t), string(s), err)
	}
	return b.convert(js, "record", string(s))
}

func (b *builtinImpl) convert(js []byte, what, id string) (*ast.Term, error) {
	return convertFact(js, b.intern, what, id)
}

// convertFact converts the JSON of a fact to an object term; nil for absent.
func convertFact(js []byte, intern internTable, what, id string) (*ast.Term, error) {
	if js == nil {
		return nil, nil // absent: undefined
	}
	v, err := jsonToValue(js, intern)
	if err != nil {
		return nil, fmt.Errorf("decoding %s %q: %w", what, id, err)
	}
	if _, ok := v.(ast.Object); !ok {
		return nil, fmt.Errorf("decoding %s %q: not a JSON object", what, id)
	}
	return ast.NewTerm(v), nil
}
