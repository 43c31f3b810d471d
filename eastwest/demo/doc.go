// Package demo runs the east-west gateway end to end on one machine, in plain words: a
// TLS backend, the gateway routing to it by SNI, and a client calling through it. It is
// what `meshfed demo gateway` (and `make run`, until the local federation exists) shows.
package demo
