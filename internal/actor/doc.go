// Package actor names who makes an audited change (join, leave, policy, drill, root
// rotation): the etcd user and the local account and host, one form for every record.
package actor
