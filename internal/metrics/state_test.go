package metrics

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// scrape returns the exposition of m.
func scrape(t testing.TB, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// sample returns the value of the series line that starts with series (name and labels).
func sample(t testing.TB, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	mm := re.FindStringSubmatch(text)
	if mm == nil {
		t.Fatalf("no series %s in\n%s", series, text)
	}
	v, err := strconv.ParseFloat(mm[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSnapshotLoads(t *testing.T) {
	m := New(Config{})
	text := scrape(t, m)
	for _, src := range []string{SnapshotSourceHTTP, SnapshotSourceFile, SnapshotSourceNATS} {
		for _, res := range []string{"ok", "error"} {
			if v := sample(t, text, `crmauthz_snapshot_loads_total{result="`+res+`",source="`+src+`"}`); v != 0 {
				t.Errorf("%s/%s starts at %v, want 0", src, res, v)
			}
		}
	}
	m.SnapshotLoad(SnapshotSourceHTTP, true)
	m.SnapshotLoad(SnapshotSourceHTTP, true)
	m.SnapshotLoad(SnapshotSourceNATS, false)
	text = scrape(t, m)
	for series, want := range map[string]float64{
		`crmauthz_snapshot_loads_total{result="ok",source="http"}`:    2,
		`crmauthz_snapshot_loads_total{result="error",source="nats"}`: 1,
		`crmauthz_snapshot_loads_total{result="ok",source="file"}`:    0,
	} {
		if got := sample(t, text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

func TestReadyAndEvaluator(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ready     bool
		evaluator string
		fallback  bool
	}{
		{"ready, IR", true, "ir", false},
		{"not ready, topdown by choice", false, "topdown", false},
		{"ready, fallen back", true, "topdown", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Config{})
			m.Ready(func() bool { return tc.ready })
			m.PolicyEvaluator(func() (string, bool) { return tc.evaluator, tc.fallback })
			text := scrape(t, m)
			if got := sample(t, text, "crmauthz_ready"); got != b2f(tc.ready) {
				t.Errorf("crmauthz_ready = %v, want %v", got, tc.ready)
			}
			if got := sample(t, text, `crmauthz_policy_evaluator{evaluator="`+tc.evaluator+`"}`); got != 1 {
				t.Errorf("crmauthz_policy_evaluator = %v, want 1", got)
			}
			if got := sample(t, text, "crmauthz_policy_evaluator_fallback"); got != b2f(tc.fallback) {
				t.Errorf("crmauthz_policy_evaluator_fallback = %v, want %v", got, tc.fallback)
			}
		})
	}
}

func TestDataDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index.db")
	m := New(Config{})
	m.DataDir(path)
	text := scrape(t, m)
	if strings.Contains(text, "crmauthz_index_file_bytes ") {
		t.Errorf("crmauthz_index_file_bytes present before the file exists")
	}
	if err := os.WriteFile(path, make([]byte, 12345), 0o600); err != nil {
		t.Fatal(err)
	}
	text = scrape(t, m)
	if got := sample(t, text, "crmauthz_index_file_bytes"); got != 12345 {
		t.Errorf("crmauthz_index_file_bytes = %v, want 12345", got)
	}
	free, size := sample(t, text, "crmauthz_data_dir_free_bytes"), sample(t, text, "crmauthz_data_dir_size_bytes")
	if size <= 0 || free < 0 || free > size {
		t.Errorf("free %v, size %v: want 0 <= free <= size, size > 0", free, size)
	}
}

func TestPolicyLastReloadOK(t *testing.T) {
	m := New(Config{})
	for i, tc := range []struct {
		ok   bool
		want float64
	}{{true, 1}, {false, 0}, {false, 0}, {true, 1}} {
		m.PolicyReload(tc.ok, "rev")
		if got := sample(t, scrape(t, m), "crmauthz_policy_last_reload_ok"); got != tc.want {
			t.Errorf("after reload %d (ok %v): crmauthz_policy_last_reload_ok = %v, want %v", i, tc.ok, got, tc.want)
		}
	}
}

func TestIndexMerges(t *testing.T) {
	m := New(Config{})
	n, s := uint64(0), 0.0
	m.IndexMerges(func() (uint64, float64) { return n, s })
	for _, c := range []struct {
		n uint64
		s float64
	}{{0, 0}, {3, 4.5}} {
		n, s = c.n, c.s
		text := scrape(t, m)
		if got := sample(t, text, "crmauthz_index_merges_total"); got != float64(c.n) {
			t.Errorf("crmauthz_index_merges_total = %v, want %d", got, c.n)
		}
		if got := sample(t, text, "crmauthz_index_merge_seconds_total"); got != c.s {
			t.Errorf("crmauthz_index_merge_seconds_total = %v, want %v", got, c.s)
		}
	}
}
