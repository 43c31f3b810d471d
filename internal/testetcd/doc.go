// Package testetcd starts a real embedded etcd for one test, bound to 127.0.0.1 on free
// ports, and cleans it up when the test ends.
package testetcd
