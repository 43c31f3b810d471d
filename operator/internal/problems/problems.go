// Package problems collects every problem an operator command finds before it changes
// anything, so that the operator fixes them all in one pass (join, leave, policy and the
// drill validate this way). Each problem names the request field it is about (the Go name
// of the field, "Cluster", "TrustDomain") and says what is wrong with the value and how to
// fix it, naming no flag: the caller says what a field is to its user (cmd/meshfed maps
// fields to flags with Invalid.Rename). go-multierror accumulates the problems and formats
// the list.
package problems

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"

	"github.com/meshfed/meshfed/api/validate"
)

// Invalid is a request that cannot be carried out, with every problem found at once.
// operator.InvalidError and drill.InvalidError are this type.
type Invalid struct {
	// What is the request ("join east", "drill").
	What string
	// Problems holds every problem, each a Problem, in the order found (multierror.Append).
	Problems *multierror.Error
}

// Problem is one problem with a request.
type Problem struct {
	// Field is the request field's Go name ("Cluster", "LeaseTTL"), or two joined by "/"
	// when they go together ("From/Target"); empty when the problem is about no one field.
	Field string
	// Msg describes the bad value and the fix, naming no flag. It may refer to other
	// fields with Ref; Error shows those by their field name, Rename by the caller's name.
	Msg string
}

// Ref is a reference to the request field field inside a problem's message ("leave out
// Ref("RotatePassword")"): shown as the field's name, or, after Rename, as the caller's
// name for it (a flag). It is validate.Ref.
func Ref(field string) string { return validate.Ref(field) }

// Error is "Field: Msg" (Msg alone without a field), fields referred to by their names.
func (p Problem) Error() string {
	return (&validate.FieldError{Field: p.Field, Msg: p.Msg}).Error()
}

// List returns the problems.
func (e *Invalid) List() []Problem {
	var out []Problem
	for _, err := range e.Problems.WrappedErrors() {
		p, ok := err.(Problem)
		if !ok {
			p = Problem{Msg: err.Error()}
		}
		out = append(out, p)
	}
	return out
}

// Error is the request and its problem, or, with more than one, the list of them (one a
// line), as go-multierror formats it with e.format.
func (e *Invalid) Error() string { return e.multi().Error() }

// Unwrap is the problems as a *multierror.Error (errors.As finds it, formatted like e).
func (e *Invalid) Unwrap() error { return e.multi() }

func (e *Invalid) multi() *multierror.Error {
	return &multierror.Error{Errors: e.Problems.WrappedErrors(), ErrorFormat: e.format}
}

// format is the ErrorFormat of the problems: "what: problem", or "what: N problems:" with
// one "  - problem" line each.
func (e *Invalid) format(es []error) string {
	if len(es) == 1 {
		return e.What + ": " + es[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", e.What, len(es))
	for _, err := range es {
		b.WriteString("\n  - ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Rename is e with each field, the problems' own and those their messages refer to (Ref),
// replaced by name(field) (a flag, for instance). Fields joined by "/" are named one by one.
func (e *Invalid) Rename(name func(field string) string) *Invalid {
	each := func(field string) string {
		parts := strings.Split(field, "/")
		for i, p := range parts {
			parts[i] = name(p)
		}
		return strings.Join(parts, "/")
	}
	out := &Invalid{What: e.What, Problems: &multierror.Error{}}
	for _, p := range e.List() {
		fe := (&validate.FieldError{Field: p.Field, Msg: p.Msg}).Rename(each)
		out.Problems = multierror.Append(out.Problems, Problem{Field: fe.Field, Msg: fe.Msg})
	}
	return out
}

// List collects problems.
type List struct {
	what string
	errs *multierror.Error
}

// New starts an empty list for the request what ("join east", "drill", ...).
func New(what string) *List { return &List{what: what} }

// Add records a problem with field (may be empty).
func (p *List) Add(field, format string, args ...any) {
	p.errs = multierror.Append(p.errs, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Len is the number of problems recorded.
func (p *List) Len() int { return len(p.errs.WrappedErrors()) }

// Err is nil without problems, else an *Invalid listing them all.
func (p *List) Err() error {
	if p.Len() == 0 {
		return nil
	}
	return &Invalid{What: p.what, Problems: multierror.Append(&multierror.Error{}, p.errs.Errors...)}
}
