// Package file is the discovery source for hosts outside Kubernetes: the exports file (the
// same format the gateway reads, api/exports), hot-reloaded. An invalid edit is logged and
// ignored; the last good snapshot stays published.
package file
