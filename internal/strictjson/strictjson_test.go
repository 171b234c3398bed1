package strictjson

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

type resource struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

type request struct {
	Subject  string          `json:"subject"`
	Resource *resource       `json:"resource"`
	Checks   []resource      `json:"checks"`
	MinSeq   uint64          `json:"min_seq"`
	Target   *string         `json:"target"`
	Input    *jsontext.Value `json:"input"`
}

// TestUnmarshalErrors: every kind of refusal, with its message naming the
// key and where it is.
func TestUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		kind      error
		pointer   string
		msg       string
	}{
		{"key twice", `{"subject":"a","subject":"b"}`, ErrDuplicateKey, "/subject", `the key "subject" is given twice`},
		{"escaped key twice", `{"subject":"a","subj\u0065ct":"b"}`, ErrDuplicateKey, "/subject", `the key "subject" is given twice`},
		{"nested key twice", `{"resource":{"type":"c","id":"x","id":"y"}}`, ErrDuplicateKey, "/resource/id", `the key "id" is given twice in resource`},
		{"key twice in a raw value", `{"input":{"a":[{"b":1,"b":2}]}}`, ErrDuplicateKey, "/input/a/0/b", `the key "b" is given twice in input.a[0]`},
		{"key twice deep in a raw value", `{"input":{"s":"u","resource":{"type":"c","id":"x","id":"y"}}}`, ErrDuplicateKey, "/input/resource/id", `the key "id" is given twice in input.resource`},
		{"key in upper case", `{"SUBJECT":"a"}`, ErrUnknownField, "/SUBJECT", `the key "SUBJECT" must be spelt "subject"`},
		{"key of an element in another case", `{"checks":[{"type":"c"},{"Type":"x"}]}`, ErrUnknownField, "/checks/1/Type", `the key "Type" in checks[1] must be spelt "type"`},
		{"unknown key", `{"x":1}`, ErrUnknownField, "/x", `unknown field "x"`},
		{"negative", `{"min_seq":-1}`, ErrType, "/min_seq", `min_seq must be a non-negative integer, not -1`},
		{"fraction", `{"min_seq":2.5}`, ErrType, "/min_seq", `min_seq must be a non-negative integer, not 2.5`},
		{"string for a number", `{"min_seq":"1"}`, ErrType, "/min_seq", `min_seq must be a non-negative integer, not a string`},
		{"string for an object", `{"resource":"x"}`, ErrType, "/resource", `resource must be an object, not a string`},
		{"array for the body", `[1]`, ErrType, "", `the body must be an object, not an array`},
		{"empty", "", ErrEmpty, "", "the body is empty"},
		{"blank", " \n", ErrEmpty, "", "the body is empty"},
		{"trailing data", `{"subject":"a"} x`, ErrTrailingData, "", "unexpected data after the JSON value"},
		{"two values", `{} {}`, ErrTrailingData, "", "unexpected data after the JSON value"},
		{"cut off", `{"subject":"a"`, ErrSyntax, "", "unexpected end of input"},
		{"not JSON", `{subject}`, ErrSyntax, "", "malformed JSON at byte 1"},
		{"invalid UTF-8", "{\"subject\":\"a\xff\"}", ErrInvalidUTF8, "/subject", "not UTF-8"},
		{"invalid UTF-8 in a key", "{\"sub\xffject\":\"a\"}", ErrInvalidUTF8, "", "not UTF-8"},
		{"too deep", `{"input":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, ErrTooDeep, "", "nested too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v request
			err := Unmarshal([]byte(tt.doc), &v)
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("Unmarshal = %v (%T), want an *Error", err, err)
			}
			if !errors.Is(err, tt.kind) || se.Kind != tt.kind {
				t.Errorf("kind %v, want %v", se.Kind, tt.kind)
			}
			if tt.pointer != "" && se.Pointer != tt.pointer {
				t.Errorf("pointer %q, want %q", se.Pointer, tt.pointer)
			}
			if !strings.Contains(se.Error(), tt.msg) {
				t.Errorf("message %q, want it to contain %q", se.Error(), tt.msg)
			}
			wantMalformed := tt.kind == ErrSyntax || tt.kind == ErrEmpty || tt.kind == ErrTrailingData || tt.kind == ErrInvalidUTF8 || tt.kind == ErrTooDeep
			if se.Malformed() != wantMalformed {
				t.Errorf("Malformed() = %v", se.Malformed())
			}
		})
	}
}

func TestUnmarshalAccepts(t *testing.T) {
	var v request
	doc := ` {"subject":"u-é","resource":{"type":"contact","id":"c-1"},"target":null,"min_seq":42,"input":{"k":[1,{"a":"b"}]}} `
	if err := Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	if v.Subject != "u-é" || v.Resource == nil || v.Resource.ID != "c-1" || v.Target != nil || v.MinSeq != 42 || string(*v.Input) != `{"k":[1,{"a":"b"}]}` {
		t.Errorf("decoded %+v", v)
	}
}

// TestUnmarshalRead: a body cut at its limit is too large when it is
// well-formed up to the cut, and malformed when it is not.
func TestUnmarshalRead(t *testing.T) {
	tooLarge := &http.MaxBytesError{Limit: 16}
	tests := []struct {
		name    string
		read    string
		readErr error
		kind    error
	}{
		{"whole", `{"subject":"a"}`, nil, nil},
		{"cut inside a value", `{"subject":"aaaa`, tooLarge, ErrTooLarge},
		{"cut after a value", `{"subject":"a"} `, tooLarge, ErrTooLarge},
		{"a syntax error before the cut", `{"subject":x,"re`, tooLarge, ErrSyntax},
		{"data after a value before the cut", `{"subject":"a"}{"sub`, tooLarge, ErrTrailingData},
		{"a duplicate before the cut is not looked at", `{"a":1,"a":2,"b`, tooLarge, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v request
			err := UnmarshalRead([]byte(tt.read), tt.readErr, &v)
			if tt.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.kind) {
				t.Fatalf("UnmarshalRead = %v, want %v", err, tt.kind)
			}
			if tt.kind == ErrTooLarge && !errors.Is(err, error(tooLarge)) {
				t.Errorf("%v does not unwrap to the *http.MaxBytesError", err)
			}
		})
	}
	// another read error stands as it is
	cut := errors.New("connection reset")
	if err := UnmarshalRead([]byte(`{"sub`), cut, new(request)); err != cut {
		t.Errorf("UnmarshalRead with a read error = %v", err)
	}
}

// TestUnmarshalRaw: the members held raw are not looked into; the
// envelope's own keys are.
func TestUnmarshalRaw(t *testing.T) {
	var env struct {
		Events []jsontext.Value `json:"events"`
	}
	if err := UnmarshalRaw([]byte("{\"events\":[{\"a\":1,\"a\":2},\"\xff\"]}"), &env); err != nil || len(env.Events) != 2 {
		t.Fatalf("UnmarshalRaw = %v, %d events", err, len(env.Events))
	}
	err := UnmarshalRaw([]byte(`{"events":[],"events":[{}]}`), &env)
	if !errors.Is(err, ErrDuplicateKey) || !strings.Contains(err.Error(), `the key "events" is given twice`) {
		t.Errorf("envelope key twice: %v", err)
	}
	if err := UnmarshalRaw([]byte(`{"EVENTS":[]}`), &env); !errors.Is(err, ErrUnknownField) {
		t.Errorf("envelope key in another case: %v", err)
	}
}

func TestStringMember(t *testing.T) {
	tests := []struct {
		doc, name string
		want      string
		ok        bool
	}{
		{`{"op":"user.delete","tx":"t-1"}`, "tx", "t-1", true},
		{`{"op":"user.delete","user":{"tx":"inner"}}`, "tx", "", false},
		{`{"TX":"t-1"}`, "tx", "", false},
		{`{"tx":"a","tx":"b"}`, "tx", "", false},
		{`{"tx":7}`, "tx", "", false},
		{`{"tx":"a",`, "tx", "", false},
		{`["tx"]`, "tx", "", false},
		{`{"a":[1,{"tx":"x"}],"op":"nope"}`, "op", "nope", true},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			if got, ok := StringMember([]byte(tt.doc), tt.name); got != tt.want || ok != tt.ok {
				t.Errorf("StringMember(%s, %q) = %q, %v; want %q, %v", tt.doc, tt.name, got, ok, tt.want, tt.ok)
			}
		})
	}
}
