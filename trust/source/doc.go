// Package source reads one cluster's own SPIFFE bundle from where it lives: a file (PEM or
// SPIFFE JSON, watched), the SPIFFE Workload API (a SPIRE agent), a SPIFFE bundle endpoint
// (https_web or https_spiffe), or meshfed's development CA. Every source validates what it
// reads; anything invalid is reported and the last good bundle stays in force.
package source
