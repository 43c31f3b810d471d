package drill

import (
	"fmt"
	"strings"
)

// InvalidError is a drill that cannot run, with every problem found at once (the operator
// fixes them all in one pass). Each problem names the Request field it is about; the
// caller says what that field is to its user (cmd/meshfed: a flag, with Rename).
type InvalidError struct {
	Problems []Problem
}

// Problem is one problem with a Request.
type Problem struct {
	// Field is the Request field's Go name ("Fail", "LeaseTTL"), or two joined by "/"
	// when they go together ("From/Target", "CertFile/KeyFile").
	Field string
	// Msg describes the bad value and the fix, naming no flag.
	Msg string
}

func (p Problem) String() string { return p.Field + ": " + p.Msg }

func (e *InvalidError) Error() string {
	if len(e.Problems) == 1 {
		return "drill: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "drill: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Rename is e with each Field replaced by name(Field) (a flag, for instance).
func (e *InvalidError) Rename(name func(field string) string) *InvalidError {
	out := &InvalidError{Problems: make([]Problem, len(e.Problems))}
	for i, p := range e.Problems {
		out.Problems[i] = Problem{Field: name(p.Field), Msg: p.Msg}
	}
	return out
}

// problems collects Problems.
type problems struct{ list []Problem }

func (p *problems) add(field, format string, args ...any) {
	p.list = append(p.list, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) len() int { return len(p.list) }

// err is nil without problems, else an *InvalidError.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &InvalidError{Problems: append([]Problem(nil), p.list...)}
}
