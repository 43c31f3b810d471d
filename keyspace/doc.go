// Package keyspace is meshfed's shared record model, the layer between api/ and the parts
// (discovery, trust, eastwest, federation/...): keyspace/records (the versioned records
// and keys of keyspace v1, no etcd dependency), keyspace/store (the typed etcd store, its
// resumable mirror and the heartbeat), keyspace/view (the merged import view and the MCS
// merge) and keyspace/embedetcd (the in-process etcd server of `meshfed etcd`, dev up and
// the tests). It imports nothing of meshfed but api/. See docs/federation.md#keyspace-v1.
package keyspace
