// Package problems collects every problem an operator command finds before it changes
// anything, so that the operator fixes them all in one pass (join, leave, policy and the
// drill validate this way). Each problem names the request field it is about (the Go name
// of the field, "Cluster", "TrustDomain") and says what is wrong with the value and how to
// fix it, naming no flag: the caller says what a field is to its user (cmd/meshfed maps
// fields to flags with Invalid.Rename).
package problems

import (
	"fmt"
	"strings"
)

// Invalid is a request that cannot be carried out, with every problem found at once.
// operator.InvalidError and drill.InvalidError are this type.
type Invalid struct {
	// What is the request ("join east", "drill").
	What     string
	Problems []Problem
}

// Problem is one problem with a request.
type Problem struct {
	// Field is the request field's Go name ("Cluster", "LeaseTTL"), or two joined by "/"
	// when they go together ("From/Target"); empty when the problem is about no one field.
	Field string
	// Msg describes the bad value and the fix, naming no flag. It may refer to other
	// fields with Ref; String shows those by their field name, Rename by the caller's name.
	Msg string
}

// refOpen and refClose enclose a field named by Ref inside a message.
const (
	refOpen  = "\x1e"
	refClose = "\x1f"
)

// Ref is a reference to the request field field inside a problem's message ("leave out
// Ref("RotatePassword")"): shown as the field's name, or, after Rename, as the caller's
// name for it (a flag).
func Ref(field string) string { return refOpen + field + refClose }

// expand replaces each Ref in msg with name(field).
func expand(msg string, name func(string) string) string {
	if !strings.Contains(msg, refOpen) {
		return msg
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, refOpen)
		if i < 0 {
			break
		}
		j := strings.Index(msg[i:], refClose)
		if j < 0 {
			break
		}
		b.WriteString(msg[:i])
		b.WriteString(name(msg[i+len(refOpen) : i+j]))
		msg = msg[i+j+len(refClose):]
	}
	b.WriteString(msg)
	return b.String()
}

func same(field string) string { return field }

func (p Problem) String() string {
	msg := expand(p.Msg, same)
	if p.Field == "" {
		return msg
	}
	return p.Field + ": " + msg
}

func (e *Invalid) Error() string {
	if len(e.Problems) == 1 {
		return e.What + ": " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", e.What, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Rename is e with each field, the problems' own and those their messages refer to (Ref),
// replaced by name(field) (a flag, for instance). Fields joined by "/" are named one by one.
func (e *Invalid) Rename(name func(field string) string) *Invalid {
	each := func(field string) string {
		if field == "" {
			return ""
		}
		parts := strings.Split(field, "/")
		for i, p := range parts {
			parts[i] = name(p)
		}
		return strings.Join(parts, "/")
	}
	out := &Invalid{What: e.What, Problems: make([]Problem, len(e.Problems))}
	for i, p := range e.Problems {
		out.Problems[i] = Problem{Field: each(p.Field), Msg: expand(p.Msg, each)}
	}
	return out
}

// List collects problems.
type List struct {
	what string
	list []Problem
}

// New starts an empty list for the request what ("join east", "drill", ...).
func New(what string) *List { return &List{what: what} }

// Add records a problem with field (may be empty).
func (p *List) Add(field, format string, args ...any) {
	p.list = append(p.list, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Len is the number of problems recorded.
func (p *List) Len() int { return len(p.list) }

// Err is nil without problems, else an *Invalid listing them all.
func (p *List) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Invalid{What: p.what, Problems: append([]Problem(nil), p.list...)}
}
