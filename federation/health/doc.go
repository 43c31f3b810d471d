// Package health actively checks every remote cluster's east-west gateway addresses
// through the gateway's reserved health name (TLS to health.meshfed.internal, one status
// line), with hysteresis: down after 3 failed checks, up after 2 good ones, and hard-down at
// once on a refused or reset connection or an explicit "draining"/"not-ready" line. The
// failover planner reads the states; the xDS server re-plans on every transition.
package health
