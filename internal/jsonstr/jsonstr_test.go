package jsonstr

import (
	"encoding/json"
	"strings"
	"testing"
)

// awkward are strings whose JSON needs each kind of escape.
func awkward() []string {
	var all strings.Builder
	for c := 0; c < 0x80; c++ {
		all.WriteByte(byte(c))
	}
	return []string{"", "u-2", all.String(), `<script>&"\'`, "a\u2028b\u2029c", "\xff\xfe bad \xc3", "日本語 🙂",
		"tab\there\r\n", "\x00\x1f\x7f", strings.Repeat("é", 300), "\b\f", "\xe2\x80", "end\xe2\x80\xa8"}
}

func TestAppendMatchesMarshal(t *testing.T) {
	for _, s := range awkward() {
		t.Run(s, func(t *testing.T) { checkAppend(t, s) })
	}
}

// TestAppendCharsInPieces: a string appended in two pieces between the
// quotes is the string appended at once, wherever it is cut between runes.
func TestAppendCharsInPieces(t *testing.T) {
	for _, s := range awkward() {
		t.Run(s, func(t *testing.T) {
			want := string(Append(nil, s))
			for i := range s { // the start of each rune
				got := string(append(AppendChars(AppendChars([]byte{'"'}, s[:i]), s[i:]), '"'))
				if got != want {
					t.Fatalf("cut at %d: %s, want %s", i, got, want)
				}
			}
		})
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	got := string(Append([]byte(`{"a":`), "x<y"))
	if want := `{"a":"x\u003cy"`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func FuzzAppend(f *testing.F) {
	for _, s := range awkward() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkAppend(t, s) })
}

func checkAppend(tb testing.TB, s string) {
	tb.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	if got := Append(nil, s); string(got) != string(want) {
		tb.Errorf("Append(%q) = %s, json.Marshal: %s", s, got, want)
	}
}
