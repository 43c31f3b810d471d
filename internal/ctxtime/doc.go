// Package ctxtime is time that a context can cut short: Sleep waits d or until ctx ends;
// Poll waits on a condition until ctx ends. The retry loops of the store, trust, rotation
// and drill use Sleep (each had its own copy); dev up and the kube test tier use Poll.
package ctxtime
