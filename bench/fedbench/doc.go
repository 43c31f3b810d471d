// Command fedbench measures the federation store and import view (make bench):
//
//	propagation: 5 clusters x 1000 services in one process on one embedded etcd; time from
//	a local change (an exports file edit, or a direct etcd write of an export record) to
//	the changed import view in another cluster, p50/p99, against the floor measured in the
//	same run: a raw etcd put observed by a raw watch.
//
//	memory: one `meshfed federation` process (a real separate process) syncing 10 clusters
//	x 10k services x 10 endpoints from etcd; its RSS and Go heap after the import view is
//	built, against the same process on an empty keyspace.
package main
