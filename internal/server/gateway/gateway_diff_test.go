package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/crmauthz/crmauthz/internal/identity"
)

// splitParseOriginal is ParseOriginal as it was before the segments were
// split in place (strings.Split, every segment decoded): FuzzParseOriginal
// compares the two. The method is checked by ParseOriginal itself (that
// part did not change).
func splitParseOriginal(method, uri string) (Original, error) {
	o, err := ParseOriginal(method, "/")
	if err != nil {
		return o, err
	}
	switch {
	case uri == "":
		return o, errors.New("the original URI is missing")
	case len(uri) > maxURIBytes:
		return o, &pathError{fmt.Sprintf("the original URI is longer than %d bytes", maxURIBytes)}
	case uri[0] != '/':
		return o, &pathError{fmt.Sprintf("the original URI %q does not start with /", truncate(uri, 80))}
	}
	o.Segments = nil
	path := uri
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		if path[i] == '?' {
			o.Query = path[i+1:]
			if j := strings.IndexByte(o.Query, '#'); j >= 0 {
				o.Query = o.Query[:j]
			}
		}
		path = path[:i]
	}
	for i := 0; i < len(path); i++ {
		if !isPathChar(path[i]) {
			return o, &pathError{fmt.Sprintf("the path holds the character %q, which is not allowed in a path", path[i])}
		}
	}
	o.Path = path
	if path == "/" {
		o.Segments = []string{}
		return o, nil
	}
	raw := strings.Split(path[1:], "/")
	o.Segments = make([]string, len(raw))
	for i, seg := range raw {
		if seg == "" {
			return o, &pathError{"the path has an empty segment (// or a trailing /)"}
		}
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return o, &pathError{fmt.Sprintf("the path segment %q is not valid percent-encoding", truncate(seg, 80))}
		}
		switch {
		case dec == "." || dec == "..":
			return o, &pathError{"the path has a . or .. segment"}
		case strings.ContainsAny(dec, "/\\"):
			return o, &pathError{"the path has an encoded / or \\ in a segment"}
		case !utf8.ValidString(dec):
			return o, &pathError{"the path is not UTF-8 once decoded"}
		}
		for _, r := range dec {
			if r < 0x20 || r == 0x7f {
				return o, &pathError{"the path holds an encoded control character"}
			}
		}
		o.Segments[i] = dec
	}
	return o, nil
}

// decodingMethodOverride is methodOverride's query part as it was before
// keys of the wrong length were skipped undecoded.
func decodingMethodOverride(query string) bool {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, _, _ := strings.Cut(kv, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if strings.EqualFold(k, "_method") {
			return true
		}
	}
	return false
}

func FuzzParseOriginal(f *testing.F) {
	for _, s := range []string{"/contacts/c-1", "/contacts/c%2D1?x=1#f", "/", "/a//b", "/a/", "/%2e%2e/x", "/a%2Fb",
		"/a%00", "/%ff", "/./a", "/a/..", "/a%zz", "/contacts/c-1/followers?followers%5B%5D=u-1&_method=PUT",
		"/x?%5fmethod=1", "/x?_METHOD", "/x?_meth%6fd=", "/x?+_method", "/x?_method+"} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, uri string) {
		got, gerr := ParseOriginal(method, uri)
		want, werr := splitParseOriginal(method, uri)
		if fmt.Sprint(gerr) != fmt.Sprint(werr) || reflect.TypeOf(gerr) != reflect.TypeOf(werr) {
			t.Fatalf("ParseOriginal(%q, %q) error %v (%T), before %v (%T)", method, uri, gerr, gerr, werr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("ParseOriginal(%q, %q) = %+v, before %+v", method, uri, got, want)
		}
		_, query, _ := strings.Cut(uri, "?")
		if got, want := methodOverride(identity.MapHeaders{}, query) != "", decodingMethodOverride(query); got != want {
			t.Fatalf("methodOverride(%q) %v, before %v", query, got, want)
		}
		if got := methodOverride(http.Header{"X-Http-Method": {"PUT"}}, query); got != "the header X-Http-Method" {
			t.Fatalf("methodOverride of the header X-Http-Method: %q", got)
		}
	})
}
