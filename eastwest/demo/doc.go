// Package demo runs the east-west gateway end to end on one machine, in plain words: a
// TLS backend, the gateway routing to it by SNI, and a client calling through it. It is
// what `meshfed demo gateway` shows; the gateway runs as eastwest/process runs it for
// `meshfed gateway`. (`make run` shows the whole local federation: meshfed dev up.)
package demo
