package policy

import (
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
	"github.com/open-policy-agent/opa/v1/ast"
)

// The JSON parser of facts lives in internal/policy/regovalue; these names
// keep the engine's and the interpreter's files reading as before.

// internTable holds shared terms for the strings that occur in most facts.
type internTable = *regovalue.InternTable

func newInternTable() internTable { return regovalue.NewInternTable() }

// jsonToValue converts one JSON document to an ast.Value (regovalue.Parse).
func jsonToValue(b []byte, intern internTable) (ast.Value, error) {
	return regovalue.Parse(b, intern)
}

// factTerms is how many terms a fact object holds for its values (a record
// uses 4: id, location_id, owner, followers); a fact needing more gets them
// in chunks.
const factTerms = 8

// factPairs is how many top-level fields a fact object holds (a record has
// at most six); more go to a slice of their own.
const factPairs = 8

// factArrays and factStrings are how many string arrays (a user's
// location_ids, a record's followers) and strings in them a fact object
// holds; more go to storage of their own. factBoxes is how many strings of
// string terms (ids, owners, locations) it holds (regovalue.StringValue);
// more are boxed as Go boxes them (an allocation each).
const (
	factArrays  = 2
	factStrings = 12
	factBoxes   = 4
)

// jsonToFact converts the JSON of a fact for the IR interpreter into f: a
// top-level object is a *factObject, whose fields the interpreter reads
// without building the ast object, and which holds the storage of its pairs
// and values (no allocation but the copy of the JSON, in a pooled f; none
// inPlace: see factsInPlace).
// isObject is false for JSON that is not an object.
func jsonToFact(f *factObject, b []byte, intern internTable, inPlace bool) (isObject bool, err error) {
	buf := regovalue.FactBuf{Terms: f.terms[:], Pairs: f.pairBuf[:0], Arrays: f.arrays[:0], Strings: f.strs[:0],
		Boxes: f.boxes[:], InPlace: inPlace}
	pairs, isObject, err := regovalue.ParseFact(b, intern, &buf)
	f.used = buf.Used
	if err != nil || !isObject {
		return false, err
	}
	f.pairs = pairs
	f.term.Value = f
	return true, nil
}

// reset clears what f used (so that it keeps nothing of its decision
// alive), and only that: the rest is still zero, and clearing it would load
// cache lines the decision never touched.
func (f *factObject) reset() {
	clear(f.pairBuf[:min(len(f.pairs), factPairs)])
	clear(f.terms[:f.used.Terms])
	clear(f.arrays[:f.used.Arrays])
	clear(f.strs[:f.used.Strings])
	clear(f.boxes[:f.used.Boxes])
	f.pairs, f.obj, f.term, f.used = nil, nil, ast.Term{}, regovalue.FactUse{}
}
