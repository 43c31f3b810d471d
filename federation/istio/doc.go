// Package istio makes meshfed a config source of istiod (MCP over xDS,
// meshConfig.configSources `xds://ADDR`): it turns the federation's failover plans (the same
// plans federation/xds serves, handed over by xds.Options.OnPlans) into Istio resources —
// ServiceEntry, WorkloadEntry per remote gateway address, DestinationRule with
// failoverPriority — and serves them as state-of-the-world ADS, full state per type, to every
// istiod that connects. It is a control-plane part: the data plane never imports it.
//
// docs/istio.md describes the resources, why this form, and how istiod is configured.
package istio
