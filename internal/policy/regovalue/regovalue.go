// Package regovalue holds what a decision reads, as OPA values: the Facts a
// decision reads from the index, the decision's Input, the conversion of a
// fact's JSON to an ast.Value (Parse, ParseFact) and of a gateway request's
// parameters (ParseBody, ParseParams). It imports no package of this module;
// internal/policy and its interpreter build on it (docs/design.md).
package regovalue

// Facts is one consistent view of the index for one decision (the server
// passes an index read transaction).
type Facts interface {
	// UserJSON returns the JSON of the user; nil, nil when absent. The bytes
	// must stay valid and unchanged until the decision that asked for them
	// is made (the index's: its read transaction is open around Decide); the
	// IR interpreter may cut its strings from them (internal/policy,
	// factsInPlace), and nothing of them is kept past the decision.
	UserJSON(id string) ([]byte, error)
	// RecordJSON returns the JSON of the record; nil, nil when absent.
	RecordJSON(typ, id string) ([]byte, error)
}

// Input is one decision request.
type Input struct {
	Subject      string
	Action       string
	ResourceType string
	ResourceID   string
	Target       string
	HasTarget    bool // the target key is only in the input when true
}
