//go:build tools

// Package istiod pins the istiod (pilot-discovery) used by the Istio interop tier (see
// ensure.sh). It is its own module so that istio.io/istio's dependency versions never move
// meshfed's.
package istiod

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
