package operator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/api/validate"
)

// SupportedEtcd is the etcd server versions meshfed supports (it uses calls older
// servers lack, such as AuthStatus, which etcd 3.5 added).
const SupportedEtcd = "3.6 and 3.7"

// minEtcd is the oldest supported server version (major, minor).
var minEtcd = [2]int{3, 6}

// ErrEtcdTooOld is returned (wrapped) for an etcd server older than SupportedEtcd.
var ErrEtcdTooOld = errors.New("too old")

// CheckEtcdVersion asks every endpoint of cli for its server version (the maintenance
// Status call, which every etcd 3 server has) and returns an error naming the server, its
// version and the versions meshfed supports when one is older than that.
func CheckEtcdVersion(ctx context.Context, cli *clientv3.Client) error {
	var firstErr error
	for _, ep := range cli.Endpoints() {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("etcd status of %s: %w", ep, err)
			}
			continue
		}
		if err := versionSupported(st.Version); err != nil {
			return fmt.Errorf("etcd server %s %w", ep, err)
		}
		return nil
	}
	return firstErr
}

func versionSupported(v string) error {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("has an unreadable version %q; meshfed supports etcd %s", v, SupportedEtcd)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("has an unreadable version %q; meshfed supports etcd %s", v, SupportedEtcd)
	}
	if major < minEtcd[0] || major == minEtcd[0] && minor < minEtcd[1] {
		return &validate.FieldError{Msg: fmt.Sprintf("is etcd %s, %v: meshfed supports etcd %s (upgrade the server, or point %s at one that is)", v, ErrEtcdTooOld, SupportedEtcd, Ref(FieldEtcdEndpoints)), Err: ErrEtcdTooOld}
	}
	return nil
}

// tooOld returns the version error when err is an Unimplemented answer (a call an old
// server lacks) from a server older than supported, nil otherwise.
func tooOld(ctx context.Context, cli *clientv3.Client, err error) error {
	if status.Code(err) != codes.Unimplemented && !strings.Contains(fmt.Sprint(err), "unknown method") {
		return nil
	}
	if verr := CheckEtcdVersion(ctx, cli); verr != nil && errors.Is(verr, ErrEtcdTooOld) {
		return verr
	}
	return nil
}
