package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := file("memory.max", "1073741824\n")
	v2max := file("memory.max.none", "max\n")
	v1none := file("limit_in_bytes", "9223372036854771712\n")
	bad := file("bad", "lots\n")
	missing := filepath.Join(dir, "missing")
	cases := []struct {
		name    string
		flag    int64
		env     string
		files   []string
		want    int64
		wantErr bool
	}{
		{"the flag wins", 512 << 20, "1GiB", []string{v2}, 512 << 20, false},
		{"a negative flag", -1, "", nil, 0, true},
		{"GOMEMLIMIT is the runtime's", 0, "700MiB", []string{v2}, 0, false},
		{"90% of the cgroup v2 limit", 0, "", []string{missing, v2}, 1073741824 / 10 * 9, false},
		{"a cgroup without a limit", 0, "", []string{v2max}, 0, false},
		{"cgroup v1 without a limit", 0, "", []string{v1none}, 0, false},
		{"no cgroup file", 0, "", []string{missing}, 0, false},
		{"a cgroup file that is not a number", 0, "", []string{bad}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, source, err := memoryLimit(tc.flag, tc.env, tc.files)
			if (err != nil) != tc.wantErr || got != tc.want || err == nil && source == "" {
				t.Fatalf("memoryLimit = %d, %q, %v; want %d (error %v)", got, source, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestGCPercent(t *testing.T) {
	const noLimit = math.MaxInt64
	cases := []struct {
		name    string
		flag    int
		env     string
		limit   int64
		want    int
		wantErr bool
	}{
		{"the default when neither is set", 0, "", noLimit, defaultGCPercent, false},
		{"GOGC is the runtime's", 0, "100", noLimit, 0, false},
		{"the flag wins over GOGC", 400, "100", noLimit, 400, false},
		{"the lowest", minGCPercent, "", noLimit, minGCPercent, false},
		{"the highest", maxGCPercent, "", noLimit, maxGCPercent, false},
		{"too low", minGCPercent - 1, "", noLimit, 0, true},
		{"too high", maxGCPercent + 1, "", noLimit, 0, true},
		{"below -1", -2, "", noLimit, 0, true},
		{"off with a memory limit", -1, "", 512 << 20, -1, false},
		{"off without a memory limit", -1, "", noLimit, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, source, err := gcPercent(tc.flag, tc.env, tc.limit)
			if (err != nil) != tc.wantErr || got != tc.want || err == nil && source == "" {
				t.Fatalf("gcPercent = %d, %q, %v; want %d (error %v)", got, source, err, tc.want, tc.wantErr)
			}
		})
	}
}
