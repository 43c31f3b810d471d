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

// Fields that problems and errors refer to (Ref) beyond a request's own: the etcd
// connection the command runs with, another request's field, and the noun for a field.
const (
	// FieldEtcdUser is the etcd user the command runs as (the store's; not a field of a
	// request).
	FieldEtcdUser = "EtcdUser"
	// FieldEtcdEndpoints are the etcd endpoints the command connects to.
	FieldEtcdEndpoints = "EtcdEndpoints"
	// FieldJoinAdminUser is JoinRequest.AdminUser, the operator user join makes.
	FieldJoinAdminUser = "JoinRequest.AdminUser"
	// FieldNoun is what a field is called ("leave the "+Ref(FieldNoun)+" out"): "field",
	// or the caller's word for its fields (cmd/meshfed: "flag").
	FieldNoun = "field"
)

// needsOperator is err (etcd's permission denied) saying that what (e.g. "policies are
// written") needs operator credentials and which: root (FieldEtcdUser) or an operator
// user, made by join when madeByJoin (FieldJoinAdminUser).
func needsOperator(err error, what string, madeByJoin bool) error {
	msg := fmt.Sprintf("%v (%s with operator credentials: %s root or an operator user", err, what, Ref(FieldEtcdUser))
	if madeByJoin {
		msg += fmt.Sprintf(" made by `meshfed join %s`", Ref(FieldJoinAdminUser))
	}
	return &validate.FieldError{Msg: msg + ")", Err: err}
}
