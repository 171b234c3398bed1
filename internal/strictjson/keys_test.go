package strictjson

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckKeys: keys are checked at every depth, beside the Go type they
// fill: in structs, slices, maps and free-form values.
func TestCheckKeys(t *testing.T) {
	type inner struct {
		A string `json:"a"`
	}
	type outer struct {
		In    *inner            `json:"in"`
		List  []inner           `json:"list"`
		M     map[string]inner  `json:"m"`
		Any   any               `json:"any"`
		Named string            // no tag: its Go name
		Skip  string            `json:"-"`
		Raw   map[string]string `json:"raw,omitempty"`
	}
	cases := []struct {
		body string
		want string // "" ok
	}{
		{`{"in":{"a":"x"},"list":[{"a":"1"},{"a":"2"}],"m":{"k":{"a":"y"},"K":{"a":"z"}},"any":{"x":1,"X":2},"Named":"n"}`, ""},
		{`{"list":[{"a":"1"},{"a":"2","a":"3"}]}`, `the key "a" is given twice in list[1]`},
		{`{"m":{"k":{"A":"y"}}}`, `the key "A" in m.k must be spelt "a"`},
		{`{"m":{"k":{},"k":{}}}`, `the key "k" is given twice in m`},
		{`{"any":[{"x":1,"x":2}]}`, `the key "x" is given twice in any[0]`},
		{`{"named":"n"}`, `"named" must be spelt "Named"`},
		{`{"in":null,"list":null,"any":"s\"}","Named":"}"}`, ""},
		{`{"any":[1,true,null,-2.5e3,"]",{}],"in":{"a":"\u0041"}}`, ""},
	}
	for _, tc := range cases {
		var v outer
		err := Unmarshal([]byte(tc.body), &v)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.body, err)
			}
			continue
		}
		var se *Error
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want an *Error containing %q", tc.body, err, tc.want)
		}
	}
	// many keys (the map index)
	var b strings.Builder
	b.WriteString(`{"any":{`)
	for i := 0; i < 40; i++ {
		b.WriteString(`"k` + strings.Repeat("x", i) + `":1,`)
	}
	b.WriteString(`"kxxx":2}}`)
	var v outer
	if err := Unmarshal([]byte(b.String()), &v); err == nil || !strings.Contains(err.Error(), `"kxxx" is given twice`) {
		t.Errorf("a duplicate among 41 keys: %v", err)
	}
}

// TestTypeErrorMessages: a value of the wrong type is named as it was sent,
// and the field's kind is said plainly.
func TestTypeErrorMessages(t *testing.T) {
	var v struct {
		N uint64   `json:"n"`
		I int      `json:"i"`
		S string   `json:"s"`
		L []string `json:"l"`
	}
	for body, want := range map[string]string{
		`{"n":-1}`:    "n must be a non-negative integer, not -1",
		`{"n":1.5}`:   "n must be a non-negative integer, not 1.5",
		`{"n":"1"}`:   "n must be a non-negative integer, not a string",
		`{"i":true}`:  "i must be an integer, not a boolean",
		`{"s":{}}`:    "s must be a string, not an object",
		`{"l":"x"}`:   "l must be an array, not a string",
		`{"s":[1]}`:   "s must be a string, not an array",
		`{"n":1e400}`: "n must be a non-negative integer, not 1e400",
	} {
		err := Unmarshal([]byte(body), &v)
		if err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
