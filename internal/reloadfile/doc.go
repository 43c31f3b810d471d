// Package reloadfile serves a value loaded from files (a certificate and its key, a
// bundle map) and loads it again when the files change: on demand, at most once per
// check interval a stat of each file, a reload when a size or modification time moved,
// and the last good value kept when a reload fails (a rotation that has written the
// certificate but not yet its key must not take the service down). No goroutine, no
// restart: every handshake asks Get.
package reloadfile
