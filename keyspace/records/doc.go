// Package records defines the etcd keyspace v1 of meshfed (keys under a configurable
// prefix, default /meshfed/v1/) and its record types: versioned JSON values that are
// validated on every read and write. It has no etcd dependency, so the records can be
// decoded, validated and fuzzed anywhere. Readers tolerate unknown fields (a newer
// writer may add some); a record with a version newer than this binary knows is refused
// with an error that says to upgrade.
package records
