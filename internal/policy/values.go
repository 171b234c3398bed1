package policy

import (
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/open-policy-agent/opa/v1/ast"
)

// The JSON parser of facts lives in internal/policy/regovalue; these names
// keep the engine's and the interpreter's files reading as before.

// internTable holds shared terms for the strings that occur in most facts.
type internTable = regovalue.InternTable

func newInternTable() internTable { return regovalue.NewInternTable() }

// jsonToValue converts one JSON document to an ast.Value (regovalue.Parse).
func jsonToValue(b []byte, intern internTable) (ast.Value, error) {
	return regovalue.Parse(b, intern)
}

// jsonToFact is jsonToValue for the IR interpreter: a top-level object is a
// *factObject, whose fields the interpreter reads without building the ast
// object.
func jsonToFact(b []byte, intern internTable) (ast.Value, error) {
	return regovalue.ParseFact(b, intern, newFactValue)
}

// newFactValue is ParseFact's top: the pairs are already a slice of their
// own, so newFactObject's copy is not needed.
func newFactValue(pairs [][2]*ast.Term) ast.Value { return &factObject{pairs: pairs} }
