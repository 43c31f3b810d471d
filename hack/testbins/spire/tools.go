//go:build tools

// Package spire pins the SPIRE server used by the trust interop test (see ensure.sh).
package spire

import _ "github.com/spiffe/spire/cmd/spire-server"
