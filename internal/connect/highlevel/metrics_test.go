package highlevel

import "testing"

// TestSourceErrorKindsFromTheStart: every kind of crmauthz_connector_source_errors_total is
// exported at 0 before the first error, so that rate() (the dashboard, the alerts) sees it.
func TestSourceErrorKindsFromTheStart(t *testing.T) {
	mfs, err := newMetrics().reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "crmauthz_connector_source_errors_total" {
			continue
		}
		if n := len(mf.GetMetric()); n != 6 {
			t.Fatalf("%d source error series, want 6", n)
		}
		for _, s := range mf.GetMetric() {
			if v := s.GetCounter().GetValue(); v != 0 {
				t.Errorf("%v starts at %v", s.GetLabel(), v)
			}
		}
		return
	}
	t.Fatal("no crmauthz_connector_source_errors_total before the first error")
}
