// Package problems collects every problem an operator command finds before it changes
// anything, so that the operator fixes them all in one pass (join, leave, policy and the
// drill validate this way).
package problems

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// List collects problems. Each problem names the flag (or key) and the fix.
type List struct {
	what string
	err  *multierror.Error
}

// New starts an empty list for the command what ("join", "drill", ...).
func New(what string) *List { return &List{what: what} }

// Add records a problem with flag (may be empty).
func (p *List) Add(flag, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if flag != "" {
		msg = flag + ": " + msg
	}
	p.err = multierror.Append(p.err, &Problem{Flag: flag, Msg: msg})
}

// AddErr records err (nil is ignored) under flag.
func (p *List) AddErr(flag string, err error) {
	if err != nil {
		p.Add(flag, "%v", err)
	}
}

// Len is the number of problems recorded.
func (p *List) Len() int {
	if p.err == nil {
		return 0
	}
	return len(p.err.Errors)
}

// Err is nil without problems, else a *multierror.Error listing them all.
func (p *List) Err() error {
	if p.Len() == 0 {
		return nil
	}
	what := p.what
	p.err.ErrorFormat = func(es []error) string {
		var b strings.Builder
		if len(es) == 1 {
			fmt.Fprintf(&b, "%s: %v", what, es[0])
			return b.String()
		}
		fmt.Fprintf(&b, "%s: %d problems:", what, len(es))
		for _, e := range es {
			b.WriteString("\n  - ")
			b.WriteString(e.Error())
		}
		return b.String()
	}
	return p.err
}

// Problem is one problem found by validation.
type Problem struct {
	Flag string
	Msg  string
}

func (p *Problem) Error() string { return p.Msg }
