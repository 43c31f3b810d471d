// Package kube is meshfed's Kubernetes side, on the MCS API (sigs.k8s.io/mcs-api v1alpha1,
// KEP-1645):
//
//   - Source (a discovery.Source) watches ServiceExports, Services and EndpointSlices and
//     emits this cluster's exports: the Service's TCP ports and the ready endpoints of its
//     EndpointSlices. It writes the Valid, Ready and Conflict conditions on each
//     ServiceExport, Conflict from the clusterset-wide merge it is handed (UpdateView).
//   - Importer turns the import view into ServiceImports and EndpointSlices for the services
//     other clusters export, one endpoint per remote gateway address, and removes them when
//     the export goes away.
//
// Both are level-triggered: every pass recomputes the wanted state from informer caches and
// the latest view and writes only differences. Leader election is the caller's.
package kube
