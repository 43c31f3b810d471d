//go:build !linux

package sockmap

import "errors"

// Probe reports why the sockmap path cannot be used: it is Linux only.
func Probe() error { return errors.New("sockmap needs Linux") }
