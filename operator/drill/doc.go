// Package drill runs failover drills (`meshfed drill`): NewPlan validates a Request and
// works out which clients' failover order the cordon changes; Run cordons a cluster (a
// drills/<id> key on its own lease, operator.StartCordon) for a while, optionally drives
// traffic as one cluster's clients would — routed by its own planner over the keyspace,
// by the EDS of a federation service's xDS server, or to a fixed address — and measures
// the switch into a Report (JSON, a plain-words summary and an HTML timeline).
package drill
