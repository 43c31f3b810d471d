// Package clientid gives a tool (the failover drill's traffic) a client identity for the
// clusterset's mTLS workloads, and checks the servers it reaches by their SPIFFE IDs
// against the federated trust bundles.
//
// The identity comes from the first source given: certificate and key files, the SPIFFE
// Workload API (an X509Source that follows rotations), or an X509-SVID minted on the spot
// from a development CA (trust/devca) of the caller's trust domain, which is what the
// local development federation uses. Without any, the client presents no certificate.
package clientid
