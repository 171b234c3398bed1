// Package strictjson is the one strict JSON decoder of crmauthz's bodies:
// decision requests, the Data API's and the Compile API's bodies, batches,
// snapshot lines and stream events (README.md, "Strict keys";
// docs/reference.md §2.6). It is github.com/go-json-experiment/json (the
// proposed encoding/json/v2) with its strict options, and typed errors:
//
//   - exactly one JSON value (ErrEmpty, ErrTrailingData, ErrSyntax);
//   - valid UTF-8 (ErrInvalidUTF8; encoding/json replaced bad bytes by U+FFFD);
//   - nested at most 10,000 levels (ErrTooDeep);
//   - each key once in its object, at any depth, raw values included
//     (ErrDuplicateKey; encoding/json kept the last);
//   - keys spelt exactly as the fields they fill, and no others
//     (ErrUnknownField; encoding/json matched "SUBJECT" to subject);
//   - values of the fields' types (ErrType);
//   - a body cut at its size limit (ErrTooLarge, see UnmarshalRead).
//
// Every error is an *Error whose message names the key and where it is;
// errors.Is(err, ErrDuplicateKey) and the like tell the kinds apart. The
// package imports no package of this module.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The kinds of *Error, for errors.Is.
var (
	ErrSyntax       = errors.New("malformed JSON")
	ErrEmpty        = errors.New("empty JSON")
	ErrTrailingData = errors.New("data after the JSON value")
	ErrInvalidUTF8  = errors.New("invalid UTF-8")
	ErrTooDeep      = errors.New("JSON nested too deeply")
	ErrTooLarge     = errors.New("JSON over its size limit")
	ErrDuplicateKey = errors.New("duplicate key")
	ErrUnknownField = errors.New("unknown field")
	ErrType         = errors.New("wrong type")
)

// Error is a body the strict decoder refuses.
type Error struct {
	Kind   error  // one of the Err* kinds above
	Offset int64  // the byte offset where it was found (-1: unknown)
	Path   string // where, e.g. "checks[1].resource" ("" at the top)
	// Pointer is the JSON pointer (RFC 6901) of the value or key at fault,
	// e.g. "/checks/1/resource" ("" for the whole body).
	Pointer string
	Msg     string // the message for the client
	Err     error  // the decoder's (or the reader's) own error, if any
}

func (e *Error) Error() string { return e.Msg }

// Unwrap gives errors.Is the kind and errors.As the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Malformed tells a body that is not JSON (syntax, empty, trailing data,
// invalid UTF-8, too deep) from one of the wrong shape (unknown field,
// duplicate key, wrong type) and one over its limit.
func (e *Error) Malformed() bool {
	switch e.Kind {
	case ErrSyntax, ErrEmpty, ErrTrailingData, ErrInvalidUTF8, ErrTooDeep:
		return true
	}
	return false
}

var strictOpts = json.JoinOptions(
	json.RejectUnknownMembers(true),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// Unmarshal decodes data, exactly one JSON value, into v strictly (see the
// package's comment).
func Unmarshal(data []byte, v any) error {
	return unmarshal(data, v, strictOpts)
}

// UnmarshalRaw is Unmarshal for an envelope whose raw members
// (jsontext.Value) are decoded, and checked, on their own later: duplicate
// keys and invalid UTF-8 inside those members are left to that decode, so
// that their errors name the member (an event of a batch, say). Duplicate
// keys of the envelope itself are refused.
func UnmarshalRaw(data []byte, v any) error {
	err := unmarshal(data, v, json.JoinOptions(strictOpts,
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)))
	if err != nil {
		return err
	}
	return checkTopKeys(data)
}

// UnmarshalRead is Unmarshal of a body read up to a size limit: data are the
// bytes read and readErr the read's error. Where the read failed (an
// *http.MaxBytesError, a connection cut), a syntax error before that point
// wins, as if the decoder had read the body itself; otherwise the read's
// error stands (an *Error of kind ErrTooLarge for an *http.MaxBytesError,
// which it unwraps to).
func UnmarshalRead(data []byte, readErr error, v any) error {
	if readErr == nil {
		return Unmarshal(data, v)
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data),
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	_, err := dec.ReadValue()
	switch {
	case err == nil:
		// a whole value before the cut: anything but space after it is
		// trailing data, as a decoder reading on would have found
		if off := dec.InputOffset(); len(bytes.TrimLeft(data[off:], " \t\r\n")) > 0 {
			return &Error{Kind: ErrTrailingData, Offset: off, Msg: "unexpected data after the JSON value"}
		}
	case !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF):
		if se := asError(data, err); se.Kind == ErrSyntax {
			return se
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(readErr, &mbe) {
		return &Error{Kind: ErrTooLarge, Offset: int64(len(data)), Err: readErr,
			Msg: fmt.Sprintf("the body is larger than %d bytes", mbe.Limit)}
	}
	return readErr
}

func unmarshal(data []byte, v any, opts json.Options) error {
	// json.Unmarshal reuses pooled decoders; on an error the body is read
	// again, value by value, to tell trailing data from other errors.
	if err := json.Unmarshal(data, v, opts); err == nil {
		return nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv.Elem().SetZero()
	}
	if len(bytes.TrimLeft(data, " \t\r\n")) == 0 {
		return &Error{Kind: ErrEmpty, Offset: 0, Msg: "the body is empty"}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data), opts)
	if err := json.UnmarshalDecode(dec, v, opts); err != nil {
		return asError(data, err)
	}
	_, err := dec.ReadToken()
	return &Error{Kind: ErrTrailingData, Offset: dec.InputOffset(), Err: err,
		Msg: "unexpected data after the JSON value"}
}

// decoderErrors are the sentinel errors jsontext does not export, found once
// by decoding examples of them.
var decoderErrors = sync.OnceValues(func() (invalidUTF8, maxDepth error) {
	probe := func(doc string) error {
		_, err := jsontext.NewDecoder(strings.NewReader(doc)).ReadValue()
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			return se.Err
		}
		return err
	}
	return probe("\"\xff\""), probe(strings.Repeat("[", 10001) + strings.Repeat("]", 10001))
})

// asError turns an error of the decoder into an *Error.
func asError(data []byte, err error) *Error {
	var (
		syn *jsontext.SyntacticError
		sem *json.SemanticError
	)
	switch {
	case errors.As(err, &syn):
		ptr := syn.JSONPointer
		if errors.Is(syn.Err, jsontext.ErrDuplicateName) {
			ptr = pointerAt(data, syn.ByteOffset)
		}
		se := syntacticError(syn, ptr, err)
		se.Pointer = string(ptr)
		return se
	case errors.As(err, &sem):
		se := semanticError(sem, err)
		se.Pointer = string(sem.JSONPointer)
		return se
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Kind: ErrSyntax, Offset: int64(len(data)), Err: err, Msg: "malformed JSON: unexpected end of input"}
	}
	return &Error{Kind: ErrSyntax, Offset: -1, Err: err, Msg: "malformed JSON: " + err.Error()}
}

func syntacticError(syn *jsontext.SyntacticError, ptr jsontext.Pointer, err error) *Error {
	path, key := where(ptr)
	invalidUTF8, maxDepth := decoderErrors()
	switch {
	case errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return &Error{Kind: ErrDuplicateKey, Offset: syn.ByteOffset, Path: path, Err: err,
			Msg: fmt.Sprintf("the key %q is given twice%s", key, in(path))}
	case errors.Is(syn.Err, io.ErrUnexpectedEOF):
		return &Error{Kind: ErrSyntax, Offset: syn.ByteOffset, Err: err, Msg: "malformed JSON: unexpected end of input"}
	case invalidUTF8 != nil && errors.Is(syn.Err, invalidUTF8):
		return &Error{Kind: ErrInvalidUTF8, Offset: syn.ByteOffset, Err: err,
			Msg: fmt.Sprintf("malformed JSON at byte %d: not UTF-8", syn.ByteOffset)}
	case maxDepth != nil && errors.Is(syn.Err, maxDepth):
		return &Error{Kind: ErrTooDeep, Offset: syn.ByteOffset, Err: err,
			Msg: fmt.Sprintf("malformed JSON at byte %d: nested too deeply", syn.ByteOffset)}
	}
	return &Error{Kind: ErrSyntax, Offset: syn.ByteOffset, Err: err,
		Msg: fmt.Sprintf("malformed JSON at byte %d: %v", syn.ByteOffset, syn.Err)}
}

// pointerAt is the JSON pointer of the token at offset in data, read token by
// token: the decoder's own pointer for a duplicate key inside a raw value
// (jsontext.Value) loses the names above it ("/input//id").
func pointerAt(data []byte, offset int64) jsontext.Pointer {
	dec := jsontext.NewDecoder(bytes.NewReader(data),
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	for {
		if _, err := dec.ReadToken(); err != nil || dec.InputOffset() > offset {
			return dec.StackPointer()
		}
	}
}

type jsonUnmarshaler interface{ UnmarshalJSON([]byte) error }

func semanticError(sem *json.SemanticError, err error) *Error {
	path, key := where(sem.JSONPointer)
	if errors.Is(sem.Err, json.ErrUnknownName) {
		if spelt, ok := fieldSpelt(sem.GoType, key); ok {
			return &Error{Kind: ErrUnknownField, Offset: sem.ByteOffset, Path: path, Err: err,
				Msg: fmt.Sprintf("the key %q%s must be spelt %q (keys are case-sensitive)", key, in(path), spelt)}
		}
		return &Error{Kind: ErrUnknownField, Offset: sem.ByteOffset, Path: path, Err: err,
			Msg: fmt.Sprintf("unknown field %q%s", key, in(path))}
	}
	field := joinPath(path, key)
	if sem.Err != nil && sem.GoType != nil && reflect.PointerTo(sem.GoType).Implements(reflect.TypeFor[jsonUnmarshaler]()) {
		// a type's own check (replication.TxID): its message stands
		return &Error{Kind: ErrType, Offset: sem.ByteOffset, Path: field, Err: err, Msg: sem.Err.Error()}
	}
	name := field
	if name == "" {
		name = "the body"
	}
	return &Error{Kind: ErrType, Offset: sem.ByteOffset, Path: field, Err: err,
		Msg: fmt.Sprintf("%s must be %s, not %s", name, goKind(sem.GoType), jsonValue(sem))}
}

// where splits a JSON pointer into the path of its parent ("checks[1]") and
// its last token (the key).
func where(p jsontext.Pointer) (path, key string) {
	var b strings.Builder
	var last string
	first := true
	for tok := range p.Tokens() {
		if !first {
			appendStep(&b, last)
		}
		last, first = tok, false
	}
	return b.String(), last
}

// appendStep adds one token to a dotted path: an array index as [n], a key
// after a dot.
func appendStep(b *strings.Builder, tok string) {
	if _, err := strconv.Atoi(tok); err == nil && tok != "" && tok[0] != '-' && tok[0] != '+' {
		b.WriteString("[" + tok + "]")
		return
	}
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.WriteString(tok)
}

func joinPath(path, key string) string {
	var b strings.Builder
	b.WriteString(path)
	if key != "" {
		appendStep(&b, key)
	}
	return b.String()
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

// goKind names what a Go type holds, in JSON's words.
func goKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.Kind().String()
}

// jsonValue names what was found: a number as it was written, anything else
// by its kind.
func jsonValue(sem *json.SemanticError) string {
	switch sem.JSONKind {
	case '0':
		if len(sem.JSONValue) > 0 {
			return string(sem.JSONValue)
		}
		return "a number"
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "another type"
}
