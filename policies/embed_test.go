package policies

import (
	"io/fs"
	"slices"
	"testing"
)

func TestFS(t *testing.T) {
	var got []string
	err := fs.WalkDir(FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"crmauthz/authz.rego", "crmauthz/config.rego", "crmauthz/authz_test.rego"} {
		if !slices.Contains(got, want) {
			t.Errorf("FS lacks %s (has %v)", want, got)
		}
	}
}
