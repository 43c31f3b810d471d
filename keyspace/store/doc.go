// Package store is the typed etcd store of meshfed's keyspace v1. It owns the one etcd
// client of a process (Dial), reads and writes records as validated, versioned JSON
// (Get, List, Create, Update, Delete; every write that depends on a read is a transaction
// with a compare on the mod revision), keeps a consistent local mirror of a prefix with a
// watch that resumes from the last seen revision and re-lists on compaction (Sync), and
// keeps a cluster's heartbeat alive on its own lease (Heartbeat).
package store
