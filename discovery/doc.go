// Package discovery finds the services this cluster exports and hands complete snapshots
// of them to the federation publisher. Sources: discovery/file (the exports file, for hosts
// outside Kubernetes) and discovery/kube (ServiceExport + Service + EndpointSlice through
// client-go informers). discovery/kube also writes the importing side: ServiceImports and
// EndpointSlices for services other clusters export.
package discovery
