// Package process is one embeddable east-west gateway process, as etcd's server/embed is
// for etcd: the gateway (eastwest), its one route source (an exports file, or the
// federation's xDS through eastwest/xdsroutes), its admin endpoints (/metrics, /healthz,
// /readyz) and the expiry gauge of the certificates it presents, started in the right
// order and stopped with a drain. `meshfed gateway`, the harness and the gateway demo all
// run their gateways through it.
//
// It is data plane only, like the rest of eastwest/: no control-plane package, no etcd
// client (TestDataPlaneImportsNoControlPlane holds it). Errors name the part of the Config
// they are about (Error.Part), not a flag: the command maps parts to its flags.
package process
