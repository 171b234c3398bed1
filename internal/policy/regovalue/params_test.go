package regovalue

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestParseBody(t *testing.T) {
	deep := strings.Repeat("[", MaxBodyDepth+1) + strings.Repeat("]", MaxBodyDepth+1)
	okDeep := strings.Repeat("[", MaxBodyDepth) + strings.Repeat("]", MaxBodyDepth)
	many := func(extra string) string { // an object large enough for the map index
		var keys []string
		for i := range 40 {
			keys = append(keys, `"k`+string(rune('a'+i%26))+strings.Repeat("x", i/26)+`":1`)
		}
		if extra != "" {
			keys = append(keys, extra)
		}
		return "{" + strings.Join(keys, ",") + "}"
	}
	cases := []struct {
		name      string
		body      string
		want      string // the value (Rego/JSON) when accepted
		err       string // else a part of the error
		ambiguous bool
	}{
		{"object", `{"assignedTo":"u-1","n":1.5,"ok":true,"x":null}`, `{"assignedto":"u-1","n":1.5,"ok":true,"x":null}`, "", false},
		{"nested objects with the same keys", `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, "", false},
		{"nested keys folded", `{"Contact":{"AssignedTo":"u-1"},"L":[{"FOLLOWERS":[]}]}`, `{"contact":{"assignedto":"u-1"},"l":[{"followers":[]}]}`, "", false},
		{"values keep their case", `{"A":"AbC"}`, `{"a":"AbC"}`, "", false},
		{"long s", `{"aſſignedTo":"u-carol"}`, `{"assignedto":"u-carol"}`, "", false},
		{"long s, escaped", `{"a\u017f\u017FignedTo":"u-carol"}`, `{"assignedto":"u-carol"}`, "", false},
		{"kelvin sign", `{"\u212aey":1}`, `{"key":1}`, "", false},
		{"dotted capital I is not i", `{"assİgnedTo":"u-1"}`, `{"assİgnedto":"u-1"}`, "", false},
		{"dotless i is not i", `{"assıgnedTo":"u-1"}`, `{"assıgnedto":"u-1"}`, "", false},
		{"greek", `{"ΣΑΣ":1}`, `{"σασ":1}`, "", false},
		{"array", `[1,"2",{"K":"v"}]`, `[1,"2",{"k":"v"}]`, "", false},
		{"string", `"x"`, `"x"`, "", false},
		{"deep but within the limit", okDeep, okDeep, "", false},
		{"many keys", many(""), "", "", false},

		{"duplicate key", `{"assignedTo":"u-1","assignedTo":"u-2"}`, "", `"assignedTo" twice`, true},
		{"duplicate key after a nested value", `{"a":{"b":1},"c":[1,2],"a":3}`, "", "twice", true},
		{"duplicate key in a nested object", `{"x":[{"k":1,"k":2}]}`, "", "twice", true},
		{"duplicate key after escapes", `{"assignedTo":"u-1","assigned\u0054o":"u-2"}`, "", "twice", true},
		{"two cases", `{"assignedTo":"a","ASSIGNEDTO":"b"}`, "", `"assignedTo" and "ASSIGNEDTO"`, true},
		{"two cases, same value", `{"assignedTo":"a","AssignedTo":"a"}`, "", "one field", true},
		{"long s and s", `{"followers":[],"followerſ":["u-1"]}`, "", `"followerſ"`, true},
		{"kelvin and k", `{"k":1,"\u212a":2}`, "", "one field", true},
		{"two cases in a nested object", `{"a":{"x":1,"X":2}}`, "", "one field", true},
		{"two cases in a large object", many(`"KA":2`), "", `"KA"`, true},
		{"duplicate in a large object", many(`"kz":2`), "", `"kz" twice`, true},

		{"not JSON", `assignedTo=u-1`, "", "not JSON", false},
		{"trailing data", `{} {}`, "", "not JSON", false},
		{"truncated", `{"assignedTo":"u-`, "", "not JSON", false},
		{"not UTF-8", "{\"a\":\"\xff\"}", "", "UTF-8", false},
		{"too deep", deep, "", "deeper", false},
		{"too deep in objects", strings.Repeat(`{"a":`, MaxBodyDepth+1) + "1" + strings.Repeat("}", MaxBodyDepth+1), "", "deeper", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseBody([]byte(tc.body))
			if tc.err == "" {
				if err != nil || v == nil {
					t.Fatalf("ParseBody = %v, %v", v, err)
				}
				if tc.want != "" {
					want, perr := ast.ParseTerm(tc.want)
					if perr != nil {
						t.Fatal(perr)
					}
					if ast.Compare(v, want.Value) != 0 {
						t.Fatalf("ParseBody = %v, want %v", v, want.Value)
					}
				}
				return
			}
			var be *BodyError
			if !errors.As(err, &be) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want a *BodyError containing %q", err, tc.err)
			}
			if be.Ambiguous != tc.ambiguous {
				t.Fatalf("Ambiguous = %v, want %v (%v)", be.Ambiguous, tc.ambiguous, err)
			}
		})
	}
}

// TestFoldKeyIsEqualFold checks FoldKey over every rune: a rune folds to a
// member of its simple folding orbit, and every member of an orbit folds to
// the same rune. So FoldKey(a) == FoldKey(b) exactly when
// strings.EqualFold(a, b), which is what Go's encoding/json matches with.
func TestFoldKeyIsEqualFold(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		s := string(r)
		f := FoldKey(s)
		if !strings.EqualFold(s, f) {
			t.Fatalf("FoldKey(%U) = %q, which EqualFold does not match", r, f)
		}
		if FoldKey(f) != f {
			t.Fatalf("FoldKey(FoldKey(%U)) = %q, not %q", r, FoldKey(f), f)
		}
		for o := unicode.SimpleFold(r); o != r; o = unicode.SimpleFold(o) {
			if g := FoldKey(string(o)); g != f {
				t.Fatalf("FoldKey(%U) = %q but FoldKey(%U) = %q: one orbit, two forms", r, f, o, g)
			}
		}
	}
	for in, want := range map[string]string{
		"assignedTo": "assignedto", "ASSIGNEDTO": "assignedto", "aſſignedTo": "assignedto",
		"followerſ": "followers", "owner": "owner", "OWNER": "owner", "": "", "a_b-C": "a_b-c",
	} {
		if got := FoldKey(in); got != want {
			t.Errorf("FoldKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// manyQuery has 9 parameters: more than parseQuery finds by a linear search.
const manyQuery = "a=0&b=1&c=2&d=3&e=4&f=5&g=6&h=7&i=8"

func TestParseParams(t *testing.T) {
	cases := []struct {
		name      string
		body      string
		query     string
		want      string // the value; "null" for none
		err       string
		ambiguous bool
	}{
		{"neither", "", "", "null", "", false},
		{"body only", `{"assignedTo":"u-1"}`, "", `{"assignedto":"u-1"}`, "", false},
		{"query only", "", "assignedTo=u-9", `{"assignedto":"u-9"}`, "", false},
		{"query folded", "", "ASSIGNEDTO=u-9&Owner=u-8", `{"assignedto":"u-9","owner":"u-8"}`, "", false},
		{"query long s, encoded", "", "a%C5%BF%C5%BFignedTo=u-9", `{"assignedto":"u-9"}`, "", false},
		{"query merged into the body", `{"firstName":"Ann"}`, "assignedTo=u-9", `{"firstname":"Ann","assignedto":"u-9"}`, "", false},
		{"list", "", "followers[]=u-1&followers%5B%5D=u-2", `{"followers":["u-1","u-2"]}`, "", false},
		{"object", "", "followers[0]=u-1&followers[1]=u-2", `{"followers":{"0":"u-1","1":"u-2"}}`, "", false},
		{"semicolons and plus", "", "a=1;b=x+y", `{"a":"1","b":"x y"}`, "", false},
		{"empty names skipped", "", "&=x&&a=", `{"a":""}`, "", false},
		{"bad escape kept", "", "a=%zz", `{"a":"%zz"}`, "", false},
		{"name starting with a bracket", "", "[x]=1", `{"[x]":"1"}`, "", false},
		{"body not an object", `[1]`, "assignedTo=u-9", `[1]`, "", false},
		{"many parameters", "", manyQuery + "&k[]=x&k[]=y&j[a]=1", `{"a":"0","b":"1","c":"2","d":"3","e":"4","f":"5","g":"6","h":"7","i":"8","j":{"a":"1"},"k":["x","y"]}`, "", false},

		{"query and body", `{"assignedTo":"u-1"}`, "assignedTo=u-9", "", "query parameter", true},
		{"query and body, folded", `{"owner":"u-1"}`, "OWNER=u-9", "", "query parameter", true},
		{"query twice", "", "assignedTo=u-1&assignedTo=u-2", "", "twice", true},
		{"query in two cases", "", "assignedTo=u-1&ASSIGNEDTO=u-2", "", "one field", true},
		{"query as string and list", "", "followers=u-1&followers[]=u-2", "", "one field", true},
		{"query object key twice", "", "f[a]=1&f[A]=2", "", "one field", true},
		{"query not UTF-8", "", "a%ff=1", "", "UTF-8", false},
		{"many parameters, one twice", "", manyQuery + "&J=9&C=2", "", `"c" and "C"`, true},
		{"many parameters, a list and a string", "", manyQuery + "&k[]=x&k=y", "", "one field", true},
		{"many parameters and the body", `{"i":1}`, manyQuery, "", "query parameter", true},
		{"body ambiguous", `{"a":1,"A":2}`, "", "", "one field", true},
		{"body invalid", `{`, "a=1", "", "not JSON", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := ParseParams([]byte(tc.body), tc.query)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.want == "null" {
					if v != nil {
						t.Fatalf("ParseParams = %v, want nil", v)
					}
					return
				}
				want := ast.MustParseTerm(tc.want)
				if v == nil || ast.Compare(v, want.Value) != 0 {
					t.Fatalf("ParseParams = %v, want %v", v, want.Value)
				}
				return
			}
			var be *BodyError
			if !errors.As(err, &be) || !strings.Contains(err.Error(), tc.err) || be.Ambiguous != tc.ambiguous {
				t.Fatalf("err = %v, want a *BodyError containing %q (ambiguous %v)", err, tc.err, tc.ambiguous)
			}
		})
	}
}
