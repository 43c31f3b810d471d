package actor

import (
	"os"
	"os/user"
)

// Of names who runs a command, for audit records and updatedBy fields: the etcd user
// (what etcd authorised) and the local account and host (who typed it), e.g.
// "root (alice@laptop)". Neither is proof of identity; etcd auth is the boundary.
func Of(etcdUser string) string {
	local := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		local = u.Username
	} else if v := os.Getenv("USER"); v != "" {
		local = v
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		local += "@" + h
	}
	if etcdUser == "" {
		return local
	}
	return etcdUser + " (" + local + ")"
}
