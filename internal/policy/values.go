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

// newFactValue is ParseFact's top. The pairs are already a slice of their
// own, so newFactObject's copy (one allocation per fact) is skipped for a
// non-empty object; {} costs nothing to copy.
func newFactValue(pairs [][2]*ast.Term) ast.Value {
	if len(pairs) == 0 {
		return newFactObject(nil)
	}
	return &factObject{pairs: pairs}
}
