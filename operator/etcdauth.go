package operator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Permission types of an etcd role (etcd's own words).
const (
	PermRead      = "read"
	PermWrite     = "write"
	PermReadWrite = "readwrite"
)

// Permission is one key permission of an etcd role: a single key, or every key starting
// with Key when Prefix is set.
type Permission struct {
	Key    string `json:"key"`
	Prefix bool   `json:"prefix"`
	Type   string `json:"type"`
	What   string `json:"what"`
}

func (p Permission) rangeEnd() string {
	if p.Prefix {
		return clientv3.GetPrefixRangeEnd(p.Key)
	}
	return ""
}

func (p Permission) etcdType() clientv3.PermissionType {
	switch p.Type {
	case PermRead:
		return clientv3.PermissionType(clientv3.PermRead)
	case PermWrite:
		return clientv3.PermissionType(clientv3.PermWrite)
	}
	return clientv3.PermissionType(clientv3.PermReadWrite)
}

// String is "readwrite /meshfed/v1/exports/east/*".
func (p Permission) String() string {
	k := p.Key
	if p.Prefix {
		k += "*"
	}
	return p.Type + " " + k
}

// nameSuffix keeps role and user names of two clustersets sharing one etcd (different
// prefixes) apart; the default prefix gets none, so names stay the documented ones.
func nameSuffix(prefix string) string {
	if prefix == records.DefaultPrefix {
		return ""
	}
	h := sha256.Sum256([]byte(prefix))
	return "-" + hex.EncodeToString(h[:4])
}

// ClusterUserName is the etcd user (and role) of one cluster: meshfed-cluster-<name>.
func ClusterUserName(ks records.Keyspace, cluster string) string {
	return "meshfed-cluster-" + cluster + nameSuffix(ks.Prefix())
}

// OperatorRoleName is the etcd role of operators (drill, policy, rotate, leave).
func OperatorRoleName(ks records.Keyspace) string {
	return "meshfed-operator" + nameSuffix(ks.Prefix())
}

// ClusterPermissions are the design's security boundary for one cluster: write on its
// own keys only, read on the whole keyspace.
func ClusterPermissions(ks records.Keyspace, c *records.Cluster) []Permission {
	ps := []Permission{
		{Key: ks.Prefix(), Prefix: true, Type: PermRead, What: "read the whole keyspace (imports, bundles, drills, policies)"},
		{Key: ks.Cluster(c.Name), Type: PermReadWrite, What: "its cluster record"},
		{Key: ks.Alive(c.Name), Type: PermReadWrite, What: "its heartbeat"},
		{Key: ks.ExportsOf(c.Name), Prefix: true, Type: PermReadWrite, What: "its exports"},
		{Key: ks.AcksOf(c.Name), Prefix: true, Type: PermReadWrite, What: "its bundle acks"},
	}
	// A cluster that shares another member's trust domain reads that bundle and never
	// writes it: its owner alone publishes it.
	if c.SharesTrustDomainWith == "" {
		ps = append(ps, Permission{Key: ks.Bundle(c.TrustDomain), Type: PermReadWrite, What: "the bundle of its trust domain"})
	}
	return ps
}

// OperatorPermissions: read and write on the whole keyspace (drills, policies, rotations,
// audit records, leave). Managing etcd users and roles still needs etcd's root role.
func OperatorPermissions(ks records.Keyspace) []Permission {
	return []Permission{{Key: ks.Prefix(), Prefix: true, Type: PermReadWrite, What: "the whole keyspace"}}
}

func isEtcdErr(err, target error) bool {
	return err != nil && (errors.Is(err, target) || strings.Contains(err.Error(), target.Error()))
}

// AuthEnabled asks etcd whether auth is on (any authenticated or anonymous user may ask).
func AuthEnabled(ctx context.Context, cli *clientv3.Client) (bool, error) {
	r, err := cli.AuthStatus(ctx)
	if err != nil {
		// etcd before 3.5 has no AuthStatus: say so in terms of versions.
		if verr := tooOld(ctx, cli, err); verr != nil {
			return false, verr
		}
		return false, fmt.Errorf("etcd auth status: %w", err)
	}
	return r.Enabled, nil
}

// rolePerms reads a role's permissions; found false when the role does not exist.
func rolePerms(ctx context.Context, cli *clientv3.Client, role string) (perms []*authpb.Permission, found bool, err error) {
	r, err := cli.RoleGet(ctx, role)
	if isEtcdErr(err, rpctypes.ErrRoleNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return r.Perm, true, nil
}

func samePerm(a *authpb.Permission, p Permission) bool {
	return bytes.Equal(a.Key, []byte(p.Key)) && bytes.Equal(a.RangeEnd, []byte(p.rangeEnd())) &&
		int32(a.PermType) == int32(p.etcdType())
}

// roleDiff says what EnsureRole would change.
type roleDiff struct {
	create bool
	grant  []Permission
	revoke []*authpb.Permission
}

func diffRole(ctx context.Context, cli *clientv3.Client, role string, want []Permission) (roleDiff, error) {
	have, found, err := rolePerms(ctx, cli, role)
	if err != nil {
		return roleDiff{}, fmt.Errorf("read etcd role %s: %w", role, err)
	}
	d := roleDiff{create: !found}
	for _, p := range want {
		ok := false
		for _, h := range have {
			if samePerm(h, p) {
				ok = true
			}
		}
		if !ok {
			d.grant = append(d.grant, p)
		}
	}
	for _, h := range have {
		ok := false
		for _, p := range want {
			if samePerm(h, p) {
				ok = true
			}
		}
		if !ok {
			d.revoke = append(d.revoke, h)
		}
	}
	return d, nil
}

func (d roleDiff) empty() bool { return !d.create && len(d.grant) == 0 && len(d.revoke) == 0 }

// ensureRole makes role hold exactly want: created if absent, missing permissions
// granted, others revoked (a forced re-join with another trust domain must lose the old
// bundle key). Idempotent.
func ensureRole(ctx context.Context, cli *clientv3.Client, role string, want []Permission) error {
	d, err := diffRole(ctx, cli, role, want)
	if err != nil {
		return err
	}
	if d.create {
		if _, err := cli.RoleAdd(ctx, role); err != nil && !isEtcdErr(err, rpctypes.ErrRoleAlreadyExist) {
			return fmt.Errorf("create etcd role %s: %w", role, err)
		}
	}
	for _, h := range d.revoke {
		if _, err := cli.RoleRevokePermission(ctx, role, string(h.Key), string(h.RangeEnd)); err != nil && !isEtcdErr(err, rpctypes.ErrPermissionNotGranted) {
			return fmt.Errorf("revoke %q from etcd role %s: %w", h.Key, role, err)
		}
	}
	for _, p := range d.grant {
		if _, err := cli.RoleGrantPermission(ctx, role, p.Key, p.rangeEnd(), p.etcdType()); err != nil {
			return fmt.Errorf("grant %s to etcd role %s: %w", p, role, err)
		}
	}
	return nil
}

// userState reports whether user exists and which roles it has.
func userState(ctx context.Context, cli *clientv3.Client, user string) (exists bool, roles []string, err error) {
	r, err := cli.UserGet(ctx, user)
	if isEtcdErr(err, rpctypes.ErrUserNotFound) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, fmt.Errorf("read etcd user %s: %w", user, err)
	}
	return true, r.Roles, nil
}

// ensureUser creates user (with password, or without one for client-certificate auth
// where etcd takes the user from the certificate's CN) when absent, and grants role.
// It reports whether the user was created. An existing user keeps its password.
func ensureUser(ctx context.Context, cli *clientv3.Client, user, password string, certAuth bool, role string) (bool, error) {
	exists, roles, err := userState(ctx, cli, user)
	if err != nil {
		return false, err
	}
	created := false
	if !exists {
		if certAuth {
			_, err = cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true})
		} else {
			_, err = cli.UserAdd(ctx, user, password)
		}
		if err != nil {
			return false, fmt.Errorf("create etcd user %s: %w", user, err)
		}
		created = true
	}
	for _, r := range roles {
		if r == role {
			return created, nil
		}
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return created, fmt.Errorf("grant etcd role %s to user %s: %w", role, user, err)
	}
	return created, nil
}

// deleteUserAndRole removes a cluster's etcd user and role; absent ones are fine. It
// reports what it removed.
func deleteUserAndRole(ctx context.Context, cli *clientv3.Client, user, role string) (removed []string, err error) {
	if _, err := cli.UserDelete(ctx, user); err == nil {
		removed = append(removed, "etcd user "+user)
	} else if !isEtcdErr(err, rpctypes.ErrUserNotFound) {
		return removed, fmt.Errorf("delete etcd user %s: %w", user, err)
	}
	if _, err := cli.RoleDelete(ctx, role); err == nil {
		removed = append(removed, "etcd role "+role)
	} else if !isEtcdErr(err, rpctypes.ErrRoleNotFound) {
		return removed, fmt.Errorf("delete etcd role %s: %w", role, err)
	}
	return removed, nil
}

// NewPassword makes a random password (24 bytes, URL-safe base64).
func NewPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// sortedPerms returns perms sorted by key for stable output.
func sortedPerms(perms []Permission) []Permission {
	out := append([]Permission(nil), perms...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
