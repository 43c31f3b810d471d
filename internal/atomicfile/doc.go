// Package atomicfile writes files so that readers never see half of one: a temporary file
// in the same directory, fsync, then rename over the target.
package atomicfile
