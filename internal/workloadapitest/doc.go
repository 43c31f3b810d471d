// Package workloadapitest is a fake SPIFFE Workload API agent for tests: it serves one
// X509SVIDResponse (an SVID, its trust domain's roots and federated bundles) on a unix
// socket and holds the stream open, as a SPIRE agent does between rotations. The gateway's
// HBONE listener (eastwest/process) and the drill's client identity (trust/clientid,
// operator/drill) are tested against it.
package workloadapitest
