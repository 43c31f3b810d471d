package operator

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// problems collects every problem found before a command changes anything, so that the
// operator fixes them all in one pass. Each problem names the flag (or key) and the fix.
type problems struct {
	what string
	err  *multierror.Error
}

func newProblems(what string) *problems { return &problems{what: what} }

// add records a problem with flag (may be empty).
func (p *problems) add(flag, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if flag != "" {
		msg = flag + ": " + msg
	}
	p.err = multierror.Append(p.err, &Problem{Flag: flag, Msg: msg})
}

// addErr records err (nil is ignored) under flag.
func (p *problems) addErr(flag string, err error) {
	if err != nil {
		p.add(flag, "%v", err)
	}
}

func (p *problems) len() int {
	if p.err == nil {
		return 0
	}
	return len(p.err.Errors)
}

// Err is nil without problems, else a *multierror.Error listing them all.
func (p *problems) Err() error {
	if p.len() == 0 {
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
