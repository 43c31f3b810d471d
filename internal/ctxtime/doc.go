// Package ctxtime is time that a context can cut short: Sleep waits d or until ctx ends.
// The retry loops of the store, trust, rotation and drill use it (each had its own copy).
package ctxtime
