// Package health actively checks every remote cluster's east-west gateway addresses
// through the gateway's reserved name health.meshfed.internal. Over a health stream (one
// TLS connection, a ping every 250 ms answered with a status line): down when a ping stays
// unanswered for 2 s; with gateways that answer one line per connection: down after 3
// failed checks a second apart. Up after 2 good answers, and hard-down at once on a refused
// or reset connection or an explicit "draining"/"not-ready" line. The failover planner
// reads the states; the xDS server re-plans on every transition.
package health
