package promtest

import (
	"reflect"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`crmauthz_ready == 0`, []string{"crmauthz_ready"}},
		{`sum by (allow) (rate(crmauthz_decisions_total{namespace=~"a|b", reason!="x{y}"}[5m]))`, []string{"crmauthz_decisions_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(d_bucket[1m])))`, []string{"d_bucket"}},
		{`time() - max by (pod) (last_sync{a="1"}) > 3600`, []string{"last_sync"}},
		{`a > 0 and on (namespace, pod) (max by (namespace, pod) (b) == 1)`, []string{"a", "b"}},
		{`sum(rate(x[1m])) / sum(rate(x[1m])) or vector(0) * 1e3`, []string{"x"}},
		{`max(a offset 5m) unless ignoring(le) b`, []string{"a", "b"}},
		{`rate(go_gc_duration_seconds_sum[1m]) / rate(go_gc_duration_seconds_count[1m])`, []string{"go_gc_duration_seconds_sum", "go_gc_duration_seconds_count"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			if got := MetricNames(tc.expr); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MetricNames = %q, want %q", got, tc.want)
			}
		})
	}
}
