package main

import (
	"errors"
	"strings"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/operator"
)

// flagErr names the flags behind a library's field errors. Libraries say which field of
// their input is wrong — a *validate.FieldError (alone, joined by errors.Join, or wrapped)
// or an *operator.InvalidError (every problem of a request, each naming its field and
// perhaps others in its message) — and the command maps each field to its flag with flags
// (field → flag; fields joined by "/" are mapped one by one). Other errors, and fields flags
// does not list, are returned as they are.
func flagErr(err error, flags map[string]string) error {
	if err == nil {
		return nil
	}
	name := func(field string) string {
		if flag, ok := flags[field]; ok {
			return flag
		}
		return field
	}
	var ie *operator.InvalidError
	if errors.As(err, &ie) {
		r := ie.Rename(name)
		if err == error(ie) {
			return r
		}
		return &renamed{err: err, msg: strings.Replace(err.Error(), ie.Error(), r.Error(), 1)}
	}
	if fe, ok := err.(*validate.FieldError); ok {
		if flag, ok := flags[fe.Field]; ok {
			return &validate.FieldError{Field: flag, Msg: fe.Msg}
		}
		return err
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		changed := false
		for _, e := range j.Unwrap() {
			m := flagErr(e, flags)
			changed = changed || m != e
			out = append(out, m)
		}
		if changed {
			return errors.Join(out...)
		}
		return err
	}
	var fe *validate.FieldError
	if errors.As(err, &fe) {
		if flag, ok := flags[fe.Field]; ok {
			r := &validate.FieldError{Field: flag, Msg: fe.Msg}
			return &renamed{err: err, msg: strings.Replace(err.Error(), fe.Error(), r.Error(), 1)}
		}
	}
	return err
}

// renamed is err (still matched by errors.Is and errors.As) with the message that names
// flags instead of fields.
type renamed struct {
	err error
	msg string
}

func (r *renamed) Error() string { return r.msg }
func (r *renamed) Unwrap() error { return r.err }
