// Package metrictest reads metric values out of a Prometheus registry in tests: the sum of
// a metric's series whose labels include given name/value pairs.
package metrictest
