// Package devup is `meshfed dev up` (what `make run` runs): a local federation of three
// simulated clusters (east, west, north) on 127.0.0.x with an embedded etcd, each with a
// federation service, an east-west gateway fed by it over xDS, a development CA for its
// own SPIFFE trust domain, and demo gRPC workloads with mTLS. A real proxyless grpc-go
// client in east (a separate process, configured only by its xDS bootstrap file) calls a
// service exported by west and north; then a failover drill of west and a gateway outage
// show traffic moving and coming back, told step by step in plain words.
package devup
