package main

import (
	"errors"
	"strings"

	"github.com/hashicorp/go-multierror"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/operator"
)

// flagErr names the flags behind a library's field errors. Libraries say which field of
// their input is wrong — a *validate.FieldError (alone, in a list such as validate.Errors
// makes, or wrapped) or an *operator.InvalidError (every problem of a request, each naming
// its field) — and may refer to other fields in their messages (validate.Ref); the
// command maps each field to its flag with flags (field → flag; fields joined by "/" are
// mapped one by one; commonFlagOf names the rest). Other errors, and fields no map lists,
// are returned as they are.
func flagErr(err error, flags map[string]string) error {
	if err == nil {
		return nil
	}
	name := func(field string) string {
		if flag, ok := flags[field]; ok {
			return flag
		}
		if flag, ok := commonFlagOf[field]; ok {
			return flag
		}
		return field
	}
	r := renameFields(err, name)
	if r.Error() == err.Error() {
		return err
	}
	return r
}

// commonFlagOf names what library messages refer to beyond one command's fields: the etcd
// connection every etcd command has flags for, the flag of join that makes operator users,
// and the word for a field.
var commonFlagOf = map[string]string{
	operator.FieldEtcdUser:      "--etcd-user",
	operator.FieldEtcdEndpoints: "--etcd-endpoints",
	operator.FieldJoinAdminUser: "--admin-user",
	operator.FieldNoun:          "flag",
}

// renameFields is err with the fields it names renamed by name (see flagErr).
func renameFields(err error, name func(string) string) error {
	switch e := err.(type) {
	case *operator.InvalidError:
		return e.Rename(name)
	case *validate.FieldError, *multierror.Error, interface{ Unwrap() []error }:
		return validate.RenameFields(e, name)
	}
	// A wrapped one: its message inside err's is replaced.
	var (
		ie *operator.InvalidError
		me *multierror.Error
		fe *validate.FieldError
		in error
	)
	switch {
	case errors.As(err, &ie):
		in = ie
	case errors.As(err, &me):
		in = me
	case errors.As(err, &fe):
		in = fe
	default:
		return err
	}
	return &renamed{err: err, msg: strings.Replace(err.Error(), in.Error(), renameFields(in, name).Error(), 1)}
}

// renamed is err (still matched by errors.Is and errors.As) with the message that names
// flags instead of fields.
type renamed struct {
	err error
	msg string
}

func (r *renamed) Error() string { return r.msg }
func (r *renamed) Unwrap() error { return r.err }
