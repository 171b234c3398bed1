package replication

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// encoding/json takes the last of two equal keys and matches a key to a
// struct field without regard to case ("SUBJECT" fills Subject). The bodies
// crmauthz reads are strict (README.md, "Strict keys"): checkKeys
// runs after a successful decode and refuses a key given twice in one object
// and a key spelt in another case than its field, naming the key and where
// it is. It walks the JSON once, beside the Go type it was decoded into.

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// checkKeys checks the keys of data, one well-formed JSON value that decoded
// into a value of type t without error. A json.RawMessage is not looked
// into (it is decoded, and checked, on its own); a map or an interface is
// checked for duplicate keys only.
func checkKeys(data []byte, t reflect.Type) error {
	c := keyChecker{s: data}
	c.ws()
	err := c.value(t)
	if ke, ok := err.(*keyError); ok {
		return ke.fieldError()
	}
	return err
}

// CheckDuplicateKeys refuses a JSON value (well-formed) that gives a key
// twice in one object, at any depth; keys are compared exactly.
func CheckDuplicateKeys(data []byte) error {
	return checkKeys(data, nil)
}

type keyChecker struct {
	s []byte
	i int
}

// keyError is a key problem on its way up from where it was found: the
// path to its object is collected while the walk unwinds (nothing is
// spent on it while all is well).
type keyError struct {
	key   []byte
	spelt string   // the field's name when the key is spelt otherwise; "" for a duplicate
	path  []string // innermost first: "resource", "[1]", "checks"
}

func (e *keyError) Error() string { return e.fieldError().Msg }

func (e *keyError) fieldError() *FieldError {
	where := ""
	for i := len(e.path) - 1; i >= 0; i-- {
		switch p := e.path[i]; {
		case where == "":
			where = " in " + p
		case p[0] == '[':
			where += p
		default:
			where += "." + p
		}
	}
	if e.spelt != "" {
		return &FieldError{Msg: fmt.Sprintf("the key %q%s must be spelt %q (keys are case-sensitive)", e.key, where, e.spelt)}
	}
	return &FieldError{Msg: fmt.Sprintf("the key %q is given twice%s", e.key, where)}
}

// within adds a step of the path to a *keyError coming up from below.
func within(err error, step string) error {
	if ke, ok := err.(*keyError); ok {
		ke.path = append(ke.path, step)
	}
	return err
}

func (c *keyChecker) ws() {
	for c.i < len(c.s) {
		switch c.s[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// value checks the value at c.i, of type t (nil: free-form).
func (c *keyChecker) value(t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType {
		return c.skip()
	}
	if c.i >= len(c.s) {
		return errShortJSON
	}
	switch c.s[c.i] {
	case '{':
		return c.object(t)
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		c.i++
		c.ws()
		if c.i < len(c.s) && c.s[c.i] == ']' {
			c.i++
			return nil
		}
		for n := 0; ; n++ {
			c.ws()
			if err := c.value(elem); err != nil {
				return within(err, "["+strconv.Itoa(n)+"]")
			}
			c.ws()
			if c.i >= len(c.s) {
				return errShortJSON
			}
			c.i++ // ',' or ']'
			if c.s[c.i-1] == ']' {
				return nil
			}
		}
	}
	return c.skip()
}

var errShortJSON = errors.New("unexpected end of the JSON value")

// object checks one object: each key once, and for a struct each key spelt
// as its field.
func (c *keyChecker) object(t reflect.Type) error {
	var fields []field
	isStruct := t != nil && t.Kind() == reflect.Struct
	if isStruct {
		fields = structFields(t)
	}
	var elem reflect.Type
	if t != nil && t.Kind() == reflect.Map {
		elem = t.Elem()
	}
	var (
		buf   [16][]byte
		keys  = buf[:0]
		index map[string]bool // once the object is large: a linear search would be quadratic
	)
	c.i++ // {
	c.ws()
	if c.i < len(c.s) && c.s[c.i] == '}' {
		c.i++
		return nil
	}
	for {
		c.ws()
		k, err := c.str()
		if err != nil {
			return err
		}
		dup := false
		if index != nil {
			dup = index[string(k)]
		} else {
			for _, o := range keys {
				if string(o) == string(k) {
					dup = true
					break
				}
			}
		}
		if dup {
			return &keyError{key: k}
		}
		if index != nil {
			index[string(k)] = true
		} else if keys = append(keys, k); len(keys) == len(buf) {
			index = make(map[string]bool, 2*len(keys))
			for _, o := range keys {
				index[string(o)] = true
			}
		}
		vt := elem
		if isStruct {
			f, ok := findField(fields, k)
			if !ok {
				return &FieldError{Msg: fmt.Sprintf("unknown field %q", k)} // encoding/json refused it already
			}
			if f.name != string(k) {
				return &keyError{key: k, spelt: f.name}
			}
			vt = f.typ
		}
		c.ws()
		c.i++ // ':'
		c.ws()
		if err := c.value(vt); err != nil {
			return within(err, string(k))
		}
		c.ws()
		if c.i >= len(c.s) {
			return errShortJSON
		}
		c.i++ // ',' or '}'
		if c.s[c.i-1] == '}' {
			return nil
		}
	}
}

// str reads a string at c.i and returns it decoded (a part of c.s when it
// has no escape sequence).
func (c *keyChecker) str() ([]byte, error) {
	if c.i >= len(c.s) || c.s[c.i] != '"' {
		return nil, fmt.Errorf("expected a string at byte %d", c.i)
	}
	start := c.i
	c.i++
	escaped := false
	for c.i < len(c.s) {
		switch c.s[c.i] {
		case '\\':
			escaped = true
			c.i += 2
			continue
		case '"':
			c.i++
			raw := c.s[start+1 : c.i-1]
			if !escaped && utf8.Valid(raw) {
				return raw, nil
			}
			var s string // escapes, or bytes encoding/json replaces with U+FFFD
			if err := json.Unmarshal(c.s[start:c.i], &s); err != nil {
				return nil, err
			}
			return []byte(s), nil
		}
		c.i++
	}
	return nil, errShortJSON
}

// skip passes over one value without looking at its keys.
func (c *keyChecker) skip() error {
	depth := 0
	for c.i < len(c.s) {
		switch ch := c.s[c.i]; {
		case ch == '"':
			c.skipString()
			if depth == 0 {
				return nil
			}
			continue
		case ch == '{' || ch == '[':
			depth++
		case ch == '}' || ch == ']':
			if depth == 0 {
				return nil // the end of a scalar
			}
			if depth--; depth == 0 {
				c.i++
				return nil
			}
		case depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'):
			return nil
		}
		c.i++
	}
	return nil
}

// skipString passes over the string at c.i without decoding it.
func (c *keyChecker) skipString() {
	c.i++ // "
	for c.i < len(c.s) {
		j := bytes.IndexAny(c.s[c.i:], `"\\`)
		if j < 0 {
			c.i = len(c.s)
			return
		}
		c.i += j
		if c.s[c.i] == '"' {
			c.i++
			return
		}
		c.i += 2 // an escape: \" does not end the string
	}
}

// field is one JSON field of a struct.
type field struct {
	name string
	typ  reflect.Type
}

// fieldCache holds structFields' answers: like encoding/json's own field
// cache, a memo of immutable type information (reflect.Type → []field).
var fieldCache sync.Map

// structFields lists the JSON fields of a struct type, as encoding/json
// names them (the tag's name, else the Go name; "-" is left out; embedded
// structs without a name are promoted).
func structFields(t reflect.Type) []field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]field)
	}
	f := typeFields(t)
	fieldCache.Store(t, f)
	return f
}

func typeFields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, typeFields(ft)...)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out = append(out, field{name: name, typ: sf.Type})
	}
	return out
}

// findField finds the field of key: the one spelt exactly so, else one
// encoding/json would match without regard to case.
func findField(fields []field, key []byte) (field, bool) {
	for _, f := range fields {
		if f.name == string(key) {
			return f, true
		}
	}
	for _, f := range fields {
		if bytes.EqualFold([]byte(f.name), key) {
			return f, true
		}
	}
	return field{}, false
}
