// Package healthprobe is the one client of the east-west gateway's health name
// (health.meshfed.internal), over the wire of api/healthwire: TLS with that SNI, read one
// status line; "ok" as its first word is healthy, anything else (another word, another
// cluster answering, a refused, reset or cut connection, a timeout) is not, and the
// Outcome says which (its Result is a metrics label). Probe checks one address once: the
// operator commands, the gateway demo and the tests use it; federation/health keeps
// streams open with Dial, ReadStatus, Judge and Classify. It sits in internal/ so that
// both planes use it (the data plane imports no control-plane package). The wire is
// documented in docs/eastwest.md.
package healthprobe
