package main

import (
	"errors"

	"github.com/meshfed/meshfed/api/validate"
)

// flagErr names the flags behind a library's field errors. Libraries say which field of
// their input is wrong (*validate.FieldError, alone or joined by errors.Join); the command
// maps each field to its flag with flags (field → flag). Other errors, and fields flags
// does not list, are returned as they are.
func flagErr(err error, flags map[string]string) error {
	if err == nil {
		return nil
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
	}
	return err
}
