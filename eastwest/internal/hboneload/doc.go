// Command hboneload is the load generator of bench/60-hbone.sh: the same gateway process
// measured on its SNI path and its HBONE path in one run (connections per second, the
// CPU the benchmark's processes and the kernel threads use per connection, bulk
// throughput), against direct connections to the same backends. `pki DIR` writes the
// SVIDs and bundle map the gateway and the client use; `run` measures.
package main
