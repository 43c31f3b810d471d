package operator

import (
	"fmt"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/operator/internal/problems"
)

// InvalidError is a request that cannot be carried out (join, leave, policy set, a drill),
// with every problem found at once: the operator fixes them all in one pass. Each problem
// names the request field it is about (JoinRequest.TrustDomain: "TrustDomain") and no
// flag; the caller says what a field is to its user (cmd/meshfed maps fields to flags
// with Rename).
type InvalidError = problems.Invalid

// Problem is one problem of an InvalidError.
type Problem = problems.Problem

// Ref refers to a request field inside a problem's message: shown as the field's name, or
// after Rename as the caller's name for it (see problems.Ref).
func Ref(field string) string { return problems.Ref(field) }

// FieldEtcdUser is the field that problems about the etcd credentials the command runs
// with name (the store's user; not a field of a request).
const FieldEtcdUser = "EtcdUser"

// needsOperator is err (etcd's permission denied) as a problem of FieldEtcdUser: what
// (e.g. "policies are written") needs operator credentials.
func needsOperator(err error, what string) error {
	return &validate.FieldError{Field: FieldEtcdUser, Msg: fmt.Sprintf("%v (%s with operator credentials: etcd's root user, or an operator user that join made as its admin user)", err, what)}
}
