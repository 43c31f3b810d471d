package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Sum is the sum of the counter and gauge series of metric name whose labels include every
// pair in labels (name, value, name, value, ...); 0 when none matches (a vector with no
// series yet is not gathered at all).
func Sum(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	sum, _ := sum(t, g, name, labels)
	return sum
}

// Value is Sum, but fails the test when no series matches: for metrics that must exist.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	sum, n := sum(t, g, name, labels)
	if n == 0 {
		t.Fatalf("metric %s%v not found", name, labels)
	}
	return sum
}

func sum(t testing.TB, g prometheus.Gatherer, name string, labels []string) (float64, int) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metric %s: labels %v are not name/value pairs", name, labels)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	var n int
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			n++
		}
	}
	return sum, n
}
