// Package fault is the contract of drill faults shared by the control plane (the drill
// record, the federation's xDS server) and the east-west gateway that carries them out:
// the kinds and their text form (what `meshfed drill --fault` takes and the drill record
// stores), and the fault in force at a gateway with its scope and absolute deadline, in
// the xDS metadata form the federation sends it in (docs/xds.md, "Faults").
//
// It imports neither plane, so the gateway learns of faults without importing any
// control-plane package.
package fault
