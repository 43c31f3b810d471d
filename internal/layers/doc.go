// Package layers holds meshfed's import order as a test: which top-level part may import
// which (api/ → keyspace/ → the parts → the composers → operator/ → harness/ → cmd/), read
// from `go list -deps`, failing with the offending import named. It has no code of its
// own. See docs/architecture.md ("Layers").
package layers
