// Package api holds the contracts shared by meshfed's data plane (eastwest) and
// control plane (federation, discovery, trust): the exports file format, the SNI
// and xDS names, and field validation. It imports neither plane, so both can use it
// without the data plane depending on the control plane.
package api
