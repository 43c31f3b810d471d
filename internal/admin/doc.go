// Package admin is the small HTTP server every long-running meshfed component exposes:
// Prometheus metrics at /metrics, liveness at /healthz, readiness at /readyz (each
// registered check must pass), plus any debug handlers a component adds. Each component
// owns its own prometheus.Registry so that several simulated clusters can run in one
// process (tests, `meshfed dev up`) without metric collisions.
package admin
