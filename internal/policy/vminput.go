package policy

import (
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/crmauthz/crmauthz/internal/policy/irvm"
	"github.com/crmauthz/crmauthz/internal/policy/regovalue"
)

// vmInput is the decision input as the interpreter sees it: the policy reads
// input.subject, input.resource.type and so on by lookups, which vmInput
// answers from the Input's fields without building an ast object. Any other
// use of input or input.resource (a comparison, a built-in's argument, an
// iteration, the result) materializes it (irvm.Lazy), which builds the
// object once (as the topdown path builds it) and uses that instead. It also
// carries the decision's facts to crm.user and crm.record (the
// evaluation's Env), and holds the storage of the facts they convert.
//
// vmInputs are pooled per revision (prepared.getVMInput, putVMInput): one
// is reused once its decision is made, so nothing of an evaluation (a term, a
// fact object) may be kept past prepared.decideVM. The Decision it returns
// holds a bool and a string, which never refer to this storage (strings are
// immutable, and a fact's strings are cut from its own copy of the JSON).
type vmInput struct {
	vmInputState
	// the facts converted in this decision: subject, record, target for the
	// default policy; a policy reading more gets more of their own
	factBuf [pooledFacts]factObject
	nfacts  int
	// inPlace: the facts' strings are cut from their JSON bytes (see
	// factsInPlace); lo and hi bound the addresses of those bytes
	inPlace bool
	lo, hi  uintptr
	// the facts read so far when vmInputState.memoFacts (httpvm.go)
	seen  [seenFacts]seenFact
	nseen int
	// the gateway's input (httpinput.go)
	http httpLazy
	// the records of the evaluation (irvm.EvalOpts.Arena), freed when the
	// vmInput is pooled again: its decision is read by then
	arena irvm.Arena
}

// pooledFacts is how many facts a pooled vmInput holds.
const pooledFacts = 3

// vmInputState is what a vmInput holds besides its facts' storage.
type vmInputState struct {
	in    Input
	p     *prepared // builds the input object (prepared.input); its intern table
	facts Facts
	terms [5]*ast.Term  // subject, action, type, id, target
	own   [5]ast.Term   // the terms of the strings that are not shared
	boxes [5]ast.String // their strings (regovalue.StringValue)
	top   ast.Term      // stands for input (Value: &topL)
	res   ast.Term      // stands for input.resource (Value: &resL)
	obj   *ast.Term     // the built input, once asked for
	// memoFacts: crm.user and crm.record answer a fact read before in
	// this evaluation from v.seen (httpvm.go)
	memoFacts bool
	// The Values of top and res: pointers into v, so that making them
	// Values allocates nothing.
	topL, resL lazyValue
}

// getVMInput readies a pooled vmInput for one decision.
func (p *prepared) getVMInput(in Input, facts Facts, inPlace bool) *vmInput {
	v, _ := p.vmInputs.Get().(*vmInput)
	if v == nil {
		v = new(vmInput)
	}
	v.in, v.p, v.facts, v.inPlace = in, p, facts, inPlace
	// An action or a record type is mostly one of the shared terms of the
	// intern table; the ids are new strings, kept in v's boxes (no
	// allocation).
	for i, s := range [5]string{in.Subject, in.Action, in.ResourceType, in.ResourceID, in.Target} {
		if i == 1 || i == 2 {
			if v.terms[i] = p.intern.Get(s); v.terms[i] != nil {
				continue
			}
		}
		if i < 4 || in.HasTarget {
			v.own[i].Value = regovalue.StringValue(&v.boxes[i], s)
			v.terms[i] = &v.own[i]
		}
	}
	v.topL = lazyValue{v: v}
	v.resL = lazyValue{v: v, resource: true}
	v.top.Value = &v.topL
	v.res.Value = &v.resL
	return v
}

// putVMInput clears v (so that it keeps nothing of its decision alive) and
// pools it.
func (p *prepared) putVMInput(v *vmInput) {
	v.vmInputState = vmInputState{}
	for i := range v.factBuf[:v.nfacts] {
		v.factBuf[i].reset()
	}
	v.nfacts, v.inPlace, v.lo, v.hi = 0, false, 0, 0
	clear(v.seen[:v.nseen])
	v.nseen = 0
	v.http.reset()
	v.arena.Reset()
	p.vmInputs.Put(v)
}

// factBytes notes the bytes of a fact converted in place.
func (v *vmInput) factBytes(js []byte) {
	if len(js) == 0 {
		return
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(js)))
	hi := lo + uintptr(len(js))
	if v.hi == 0 {
		v.lo, v.hi = lo, hi
		return
	}
	v.lo, v.hi = min(v.lo, lo), max(v.hi, hi)
}

// inFacts tells whether s may be in the bytes of a fact converted in place
// (between the lowest and the highest address of them).
func (v *vmInput) inFacts(s string) bool {
	if v.hi == 0 || len(s) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	return p >= v.lo && p < v.hi
}

// newFact is the storage of the next fact of the decision.
func (v *vmInput) newFact() *factObject {
	if v.nfacts < len(v.factBuf) {
		v.nfacts++
		return &v.factBuf[v.nfacts-1]
	}
	return new(factObject)
}

// field is input[key]; res stands for input.resource.
func (v *vmInput) field(key, res *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	switch k {
	case "subject":
		return v.terms[0]
	case "action":
		return v.terms[1]
	case "resource":
		return res
	case "target":
		if v.in.HasTarget {
			return v.terms[4]
		}
	}
	return nil
}

// resourceField is input.resource[key].
func (v *vmInput) resourceField(key *ast.Term) *ast.Term {
	k, ok := key.Value.(ast.String)
	if !ok {
		return nil
	}
	switch k {
	case "type":
		return v.terms[2]
	case "id":
		return v.terms[3]
	}
	return nil
}

func (v *vmInput) object() *ast.Term {
	if v.obj == nil {
		v.obj = ast.NewTerm(v.p.input(v.in))
	}
	return v.obj
}

func (v *vmInput) resource() *ast.Term {
	obj, ok := v.object().Value.(ast.Object)
	if !ok {
		return nil
	}
	return obj.Get(ast.StringTerm("resource"))
}

// *lazyValue is the Value of the terms standing for input and
// input.resource: an irvm.Lazy. The interpreter never hands them to OPA's
// code (it materializes them first); should one escape, it behaves as the
// value it stands for.
type lazyValue struct {
	v        *vmInput
	resource bool
}

func (l *lazyValue) real() ast.Value {
	t := l.v.object()
	if l.resource {
		t = l.v.resource()
	}
	if t == nil {
		return ast.Null{}
	}
	return t.Value
}

// Lookup is input[key] or input.resource[key].
func (l *lazyValue) Lookup(key *ast.Term) *ast.Term {
	if l.resource {
		return l.v.resourceField(key)
	}
	return l.v.field(key, &l.v.res)
}

// Materialize is the input's or input.resource's ast value.
func (l *lazyValue) Materialize() *ast.Term {
	if l.resource {
		return l.v.resource()
	}
	return l.v.object()
}

func (l *lazyValue) Compare(other ast.Value) int          { return l.real().Compare(other) }
func (l *lazyValue) Find(path ast.Ref) (ast.Value, error) { return l.real().Find(path) }
func (l *lazyValue) Hash() int                            { return l.real().Hash() }
func (l *lazyValue) IsGround() bool                       { return true }
func (l *lazyValue) String() string                       { return l.real().String() }
func (l *lazyValue) StringLength() int                    { return l.real().StringLength() }
