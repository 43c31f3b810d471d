// Package embedetcd runs a real etcd server in-process (go.etcd.io/etcd/server/v3/embed):
// the default single-machine mode (`meshfed etcd`, `meshfed dev up`) and the etcd of every
// test. Optional client TLS (mTLS) and auth make it behave like a production cluster for
// the tests that need one.
package embedetcd
