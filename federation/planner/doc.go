// Package planner turns the merged import view into failover plans: for every imported
// service port, the ordered priority list a data plane uses (this cluster's own endpoints
// direct, then other clusters through their gateways, by locality and policy, without
// unhealthy, cordoned, empty or long-stale clusters). PlanService is a pure function;
// Stabilizer holds plans back so that priorities are not reassigned more than once per
// interval unless a cluster is going away.
package planner
