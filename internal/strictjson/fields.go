package strictjson

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// fieldSpelt finds the field of a struct type that key names in another
// case ("SUBJECT" for subject), for the message of an unknown field.
func fieldSpelt(t reflect.Type, key string) (string, bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	for _, name := range structFields(t) {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

// fieldCache holds structFields' answers: a memo of immutable type
// information (reflect.Type → []string), as the decoder's own.
var fieldCache sync.Map

// structFields lists the JSON names of a struct type's fields (the tag's
// name, else the Go name; "-" left out; embedded structs without a name
// promoted).
func structFields(t reflect.Type) []string {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]string)
	}
	f := typeFields(t)
	fieldCache.Store(t, f)
	return f
}

func typeFields(t reflect.Type) []string {
	var out []string
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
		out = append(out, name)
	}
	return out
}

// checkTopKeys refuses a key given twice in the top-level object of data
// (well-formed, as UnmarshalRaw decoded it), without looking into the
// members' values.
func checkTopKeys(data []byte) error {
	dec := jsontext.NewDecoder(strings.NewReader(string(data)),
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil
	}
	seen := map[string]bool{}
	for dec.PeekKind() == '"' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil
		}
		name := tok.String()
		if seen[name] {
			return &Error{Kind: ErrDuplicateKey, Offset: dec.InputOffset(), Pointer: "/" + escapeToken(name),
				Msg: fmt.Sprintf("the key %q is given twice", name)}
		}
		seen[name] = true
		if err := dec.SkipValue(); err != nil {
			return nil
		}
	}
	return nil
}

// isName tells whether the quoted name raw is name.
func isName(raw jsontext.Value, name string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return len(raw) >= 2 && string(raw[1:len(raw)-1]) == name
	}
	unquoted, err := jsontext.AppendUnquote(nil, raw)
	return err == nil && string(unquoted) == name
}

// escapeToken escapes a key for a JSON pointer (RFC 6901).
func escapeToken(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// StringMember reads the member name of the top-level object of data as a
// string, spelt exactly, without decoding the rest (an event's "tx" or "op"
// for a message about an event that does not decode). ok is false when data
// is not an object, has no such member, gives it twice, or it is not a
// string.
func StringMember(data []byte, name string) (s string, ok bool) {
	// read in place, not copied; a duplicate of name is refused below (the
	// decoder's own tracking of every object's names costs allocations)
	dec := jsontext.NewDecoder(bytes.NewBuffer(data), jsontext.AllowDuplicateNames(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return "", false
	}
	for dec.PeekKind() == '"' {
		raw, err := dec.ReadValue() // the name, quoted: no copy
		if err != nil {
			return "", false
		}
		if !isName(raw, name) {
			if dec.SkipValue() != nil {
				return "", false
			}
			continue
		}
		v, err := dec.ReadToken()
		if err != nil || v.Kind() != '"' || ok {
			return "", false
		}
		s, ok = v.String(), true
	}
	if _, err := dec.ReadToken(); err != nil { // '}' (or a syntax error)
		return "", false
	}
	return s, ok
}
