package regovalue

import (
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
)

// StringValue is s as an ast.Value whose string header is kept at *box:
// the same value as ast.String(s), without the allocation Go makes to box a
// string in an interface. box must stay unchanged while the value is in use
// (the IR interpreter's pooled storage: one decision). An interface holding
// a string is a pointer to its type's table and a pointer to the string's
// header (the layout the runtime itself relies on, runtime.iface); the
// value built here only points that second word at box.
func StringValue(box *ast.String, s string) ast.Value {
	*box = ast.String(s)
	v := ast.Value(ast.String("")) // the empty string boxes without an allocation
	(*[2]unsafe.Pointer)(unsafe.Pointer(&v))[1] = unsafe.Pointer(box)
	return v
}
