package regovalue

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// upstreamFields is what a Go upstream decodes a CRM body into: the fields
// the default policy reads (routes.rego), matched by encoding/json.
type upstreamFields struct {
	AssignedTo json.RawMessage `json:"assignedTo"`
	Owner      json.RawMessage `json:"owner"`
	Followers  json.RawMessage `json:"followers"`
}

// folded names of upstreamFields, as the policy reads them.
var upstreamKeys = [...]string{"assignedto", "owner", "followers"}

func (u *upstreamFields) raw(i int) json.RawMessage {
	return [...]json.RawMessage{u.AssignedTo, u.Owner, u.Followers}[i]
}

// sameJSON reports whether the policy's view of a field (nil when absent)
// is the value encoding/json put in the field (nil when absent or null).
func sameJSON(tb testing.TB, view *ast.Term, raw json.RawMessage) bool {
	tb.Helper()
	if view == nil || ast.NullTerm().Equal(view) {
		return raw == nil || string(raw) == "null"
	}
	if raw == nil {
		return false
	}
	var a, b any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		tb.Fatalf("the upstream's raw value %q: %v", raw, err)
	}
	vi, err := ast.JSON(view.Value)
	if err != nil {
		tb.Fatalf("the view's value %v: %v", view, err)
	}
	vb, err := json.Marshal(vi)
	if err != nil {
		tb.Fatalf("marshal %v: %v", view, err)
	}
	dec = json.NewDecoder(bytes.NewReader(vb))
	dec.UseNumber()
	if err := dec.Decode(&b); err != nil {
		tb.Fatal(err)
	}
	return reflect.DeepEqual(a, b)
}

// FuzzParseBodyFolding: whatever the body, ParseBody either refuses it or
// gives a view in which the fields assignedTo, owner and followers hold
// exactly what encoding/json fills into a struct with those fields (Unicode
// simple folding, duplicates, escapes); a body refused as ambiguous has two
// keys in one object that strings.EqualFold matches.
func FuzzParseBodyFolding(f *testing.F) {
	for _, s := range []string{
		`{"assignedTo":"u-carol"}`,
		`{"aſſignedTo":"u-carol"}`,
		`{"ASSIGNEDTO":"u-1","firstName":"Ann"}`,
		`{"assignedTo":"a","ASSIGNEDTO":"b"}`,
		`{"followerſ":["u-1","u-2","u-3","u-4","u-5","u-6","u-7","u-8","u-9","u-10","u-11"]}`,
		`{"followers":[],"FOLLOWERS":["u-1"]}`,
		`{"owner":null,"Owner":"u-1"}`,
		`{"\u006fwner":"u-1"}`,
		`{"o\u0057ner":"u-2"}`,
		`{"assıgnedTo":"u-1"}`,
		`{"assİgnedTo":"u-1"}`,
		`{"owner":"u-1","owner":"u-2"}`,
		`{"x":{"assignedTo":"u-1","AssignedTo":"u-2"}}`,
		`{"assignedTo":1e2,"owner":-0.5,"followers":{"a":[true,false,null]}}`,
		`[{"assignedTo":"u-1"}]`,
		`"assignedTo"`,
		`{"\ud800":1,"\udc00":2}`,
		`{"a":{},"b":[],"A":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseBody(body)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %T %v, want a *BodyError", err, err)
			}
			if be.Ambiguous && !hasFoldedDuplicate(t, body) {
				t.Fatalf("refused as ambiguous (%v), but no object of %q has two keys EqualFold matches", err, body)
			}
			return
		}
		var u upstreamFields
		uerr := json.Unmarshal(body, &u)
		obj, isObj := v.(ast.Object)
		if !isObj {
			return // the policy refuses a body that is not an object (invalid_body)
		}
		if uerr != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(uerr, &te) {
				t.Fatalf("ParseBody accepted %q, which encoding/json refuses: %v", body, uerr)
			}
			return // a field of another type than RawMessage takes: cannot happen, but not a disagreement
		}
		for i, k := range upstreamKeys {
			if !sameJSON(t, obj.Get(ast.StringTerm(k)), u.raw(i)) {
				t.Fatalf("body %q: the policy sees %s = %v, encoding/json fills %s", body, k, obj.Get(ast.StringTerm(k)), u.raw(i))
			}
		}
	})
}

// hasFoldedDuplicate walks body with encoding/json's tokenizer and reports
// whether one of its objects has two keys strings.EqualFold matches.
func hasFoldedDuplicate(tb testing.TB, body []byte) bool {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	type frame struct {
		keys   []string // nil for an array
		object bool
		expect bool // the next token is a key
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := len(stack) - 1
		if k, ok := tok.(string); ok && top >= 0 && stack[top].object && stack[top].expect {
			for _, o := range stack[top].keys {
				if strings.EqualFold(o, k) {
					return true
				}
			}
			stack[top].keys = append(stack[top].keys, k)
			stack[top].expect = false
			continue
		}
		if top >= 0 && stack[top].object {
			stack[top].expect = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, expect: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if n := len(stack) - 1; n >= 0 && stack[n].object {
				stack[n].expect = true
			}
		}
	}
}

// FuzzParseParamsQuery: whatever the body and query, ParseParams refuses
// the request or gives a view in which each field the policy reads
// (assignedTo, owner, followers) is there exactly when the body gives it (as
// encoding/json reads the body) or a query parameter's name (before any
// bracket) strings.EqualFold matches it; a field given by both is refused.
func FuzzParseParamsQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"", "assignedTo=u-9"},
		{"", "a%C5%BF%C5%BFignedTo=u-9"},
		{`{"firstName":"Ann"}`, "ASSIGNEDTO=u-9"},
		{`{"assignedTo":"u-1"}`, "assignedto=u-9"},
		{"", "followers[]=u-1&followers[]=u-2"},
		{"", "followerſ[0]=u-1"},
		{"", "followers=u-1&followers[]=u-2"},
		{"", "owner=u-1;owner=u-2"},
		{"", "x=1&&=2&%zz=3"},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		v, err := ParseParams(body, query)
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %T %v, want a *BodyError", err, err)
			}
			return
		}
		obj, isObj := v.(ast.Object)
		if !isObj {
			if v != nil && len(body) == 0 {
				t.Fatalf("a query alone gave %v, not an object", v)
			}
			return
		}
		var u upstreamFields
		if len(body) > 0 {
			if err := json.Unmarshal(body, &u); err != nil {
				t.Fatalf("ParseParams accepted the body %q, which encoding/json refuses: %v", body, err)
			}
		}
		inQuery := [len(upstreamKeys)]bool{}
		for _, part := range strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == ';' }) {
			name, _, _ := strings.Cut(part, "=")
			if d, err := url.QueryUnescape(name); err == nil {
				name = d
			}
			if i := strings.IndexByte(name, '['); i > 0 {
				name = name[:i]
			}
			for i, k := range upstreamKeys {
				inQuery[i] = inQuery[i] || strings.EqualFold(name, k)
			}
		}
		for i, k := range upstreamKeys {
			inBody := u.raw(i) != nil
			has := obj.Get(ast.StringTerm(k)) != nil
			switch {
			case inBody && inQuery[i]:
				t.Fatalf("body %q and query %q both give %s: accepted as %v", body, query, k, obj)
			case has != (inBody || inQuery[i]):
				t.Fatalf("body %q, query %q: the view %v has %s: %v; body gives it: %v, query: %v", body, query, obj, k, has, inBody, inQuery[i])
			case inBody && !sameJSON(t, obj.Get(ast.StringTerm(k)), u.raw(i)):
				t.Fatalf("body %q: the view has %s = %v, encoding/json fills %s", body, k, obj.Get(ast.StringTerm(k)), u.raw(i))
			}
		}
	})
}
