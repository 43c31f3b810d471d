package validate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// FieldError is one problem with one field.
type FieldError struct {
	Field string // path, e.g. services[0].ports[1].port; may start with a Ref
	Msg   string // what is wrong and how to fix it; may refer to other fields (Ref)
	Err   error  // the cause, when there is one (errors.Is and errors.As see it); Msg says it
}

func (e *FieldError) Error() string {
	msg := Expand(e.Msg, nil)
	if e.Field == "" {
		return msg
	}
	return Expand(e.Field, nil) + ": " + msg
}

func (e *FieldError) Unwrap() error { return e.Err }

// Rename is e with its field, and those its message refers to (Ref), named by name (a
// caller's name for a field: a flag, for instance). A field that holds a Ref (a path
// under a referred field, Ref("Gateways")+"[1]") has that Ref renamed.
func (e *FieldError) Rename(name func(field string) string) *FieldError {
	f := e.Field
	if strings.Contains(f, refOpen) {
		f = Expand(f, name)
	} else if f != "" {
		f = name(f)
	}
	return &FieldError{Field: f, Msg: Expand(e.Msg, name), Err: e.Err}
}

// RenameFields is err with the fields of its *FieldErrors renamed (FieldError.Rename):
// err itself, or each error of a list (a *multierror.Error such as Errors.Err makes, or
// errors.Join's). Other errors are returned as they are.
func RenameFields(err error, name func(field string) string) error {
	switch e := err.(type) {
	case *FieldError:
		return e.Rename(name)
	case *multierror.Error:
		out := &multierror.Error{ErrorFormat: e.ErrorFormat}
		for _, x := range e.Errors {
			out.Errors = append(out.Errors, RenameFields(x, name))
		}
		return out
	case interface{ Unwrap() []error }:
		var out []error
		for _, x := range e.Unwrap() {
			out = append(out, RenameFields(x, name))
		}
		return errors.Join(out...)
	}
	return err
}

// RefText is err's message with the references (Ref) of its *FieldErrors (alone or in a
// list, as RenameFields finds them) kept, not shown by name: for a message built from
// err's that its caller renames.
func RefText(err error) string {
	switch e := err.(type) {
	case *FieldError:
		if e.Field == "" {
			return e.Msg
		}
		return e.Field + ": " + e.Msg
	case *multierror.Error:
		raw := make([]error, len(e.Errors))
		for i, x := range e.Errors {
			raw[i] = errors.New(RefText(x))
		}
		if e.ErrorFormat == nil {
			return multierror.ListFormatFunc(raw)
		}
		return e.ErrorFormat(raw)
	case interface{ Unwrap() []error }:
		var lines []string
		for _, x := range e.Unwrap() {
			lines = append(lines, RefText(x))
		}
		return strings.Join(lines, "\n")
	}
	return err.Error()
}

// refOpen and refClose enclose a field named by Ref inside a message.
const (
	refOpen  = "\x1e"
	refClose = "\x1f"
)

// Ref is a reference to the input field field inside an error message ("leave out " +
// Ref("RotatePassword")): the message shows the field's name, or, after Rename, the
// caller's name for it (cmd/meshfed: the flag). A library thus says which other field a
// fix is about without knowing what its caller calls that field.
func Ref(field string) string { return refOpen + field + refClose }

// Expand is msg with each Ref replaced by name(field) (nil: the field's own name).
func Expand(msg string, name func(field string) string) string {
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
		field := msg[i+len(refOpen) : i+j]
		if name != nil {
			field = name(field)
		}
		b.WriteString(msg[:i])
		b.WriteString(field)
		msg = msg[i+j+len(refClose):]
	}
	b.WriteString(msg)
	return b.String()
}

// Errors collects every problem found, so a user fixes them all in one pass
// (go-multierror accumulates them).
type Errors struct {
	errs *multierror.Error
}

// Add records a problem with field.
func (e *Errors) Add(field, format string, args ...any) {
	e.errs = multierror.Append(e.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// AddErr records err (which may be nil) as a problem of field when err is not already a FieldError.
func (e *Errors) AddErr(field string, err error) {
	if err == nil {
		return
	}
	var fe *FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		if field != "" && !strings.HasPrefix(fe.Field, field) {
			fe = &FieldError{Field: field + "." + fe.Field, Msg: fe.Msg, Err: fe.Err}
		}
		e.errs = multierror.Append(e.errs, fe)
		return
	}
	e.errs = multierror.Append(e.errs, &FieldError{Field: field, Msg: err.Error()})
}

// Len is the number of problems recorded.
func (e *Errors) Len() int { return len(e.errs.WrappedErrors()) }

// Err returns nil when nothing was recorded, else a *multierror.Error listing every
// problem, one a line (LineFormat).
func (e *Errors) Err() error {
	if e.Len() == 0 {
		return nil
	}
	return &multierror.Error{Errors: append([]error(nil), e.errs.Errors...), ErrorFormat: LineFormat}
}

// NewList is an empty list of errors that reads one error a line (LineFormat), for code
// that collects several failures: multierror.Append to it, ErrorOrNil at the end.
func NewList() *multierror.Error { return &multierror.Error{ErrorFormat: LineFormat} }

// LineFormat is the multierror.ErrorFormatFunc of Errors and NewList: the errors'
// messages, one a line (as errors.Join writes them).
func LineFormat(es []error) string {
	var b strings.Builder
	for i, err := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// DNSLabel reports whether v is an RFC 1123 DNS label: lower-case letters, digits and '-',
// starting and ending with an alphanumeric, at most 63 characters. Cluster names,
// namespaces, service and port names, zones are DNS labels.
func DNSLabel(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	if len(v) > 63 {
		return fmt.Errorf("%q is %d characters; a DNS label has at most 63", v, len(v))
	}
	if !dnsLabelRE.MatchString(v) {
		return fmt.Errorf("%q is not a DNS label: use lower-case letters, digits and '-', starting and ending with a letter or digit", v)
	}
	return nil
}

var dnsSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// DNSSubdomain reports whether v is an RFC 1123 subdomain (dot-separated DNS labels, at most
// 253 characters). SPIFFE trust domains and SNI domains are subdomains.
func DNSSubdomain(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	if len(v) > 253 {
		return fmt.Errorf("%q is %d characters; at most 253 are allowed", v, len(v))
	}
	if !dnsSubdomainRE.MatchString(v) {
		return fmt.Errorf("%q is not a DNS name: use dot-separated labels of lower-case letters, digits and '-'", v)
	}
	for _, l := range strings.Split(v, ".") {
		if len(l) > 63 {
			return fmt.Errorf("%q has a label longer than 63 characters", v)
		}
	}
	return nil
}

// Port reports whether p is a TCP port number (1-65535).
func Port(p int64) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is not a port: use 1-65535", p)
	}
	return nil
}

// IP reports whether v is a literal IPv4 or IPv6 address (no zone, no host name).
func IP(v string) error {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("%q is not an IP address: endpoints are IP literals such as 10.0.0.7 or fd00::7", v)
	}
	if a.Zone() != "" {
		return fmt.Errorf("%q has an IPv6 zone; use an address without %%zone", v)
	}
	return nil
}

// HostPort reports whether v is host:port with a non-empty host (name or IP) and a valid port.
func HostPort(v string) error {
	ap, err := netip.ParseAddrPort(v)
	if err == nil {
		if ap.Port() == 0 {
			return fmt.Errorf("%q has port 0: use 1-65535", v)
		}
		return nil
	}
	i := strings.LastIndexByte(v, ':')
	if i <= 0 || i == len(v)-1 {
		return fmt.Errorf("%q is not HOST:PORT (for example 203.0.113.10:15443 or gw.example.com:15443)", v)
	}
	host, port := v[:i], v[i+1:]
	if strings.ContainsAny(host, "[]:") {
		return fmt.Errorf("%q is not HOST:PORT: write IPv6 addresses as [addr]:port", v)
	}
	if err := DNSSubdomain(strings.ToLower(host)); err != nil {
		return fmt.Errorf("%q: host %w", v, err)
	}
	var n int64
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q: port %q is not a number", v, port)
		}
		n = n*10 + int64(c-'0')
		if n > 65535 {
			break
		}
	}
	if err := Port(n); err != nil {
		return fmt.Errorf("%q: %w", v, err)
	}
	return nil
}

// ListenAddr reports whether v is an address to listen on: [HOST]:PORT, where an empty
// host means every interface and port 0 picks a free port.
func ListenAddr(v string) error {
	i := strings.LastIndexByte(v, ':')
	if i < 0 {
		return fmt.Errorf("%q is not [HOST]:PORT (for example 127.0.0.1:15000, :15443, or 127.0.0.1:0 for a free port)", v)
	}
	host, port := v[:i], v[i+1:]
	if host != "" {
		if h, ok := strings.CutPrefix(host, "["); ok {
			h, ok = strings.CutSuffix(h, "]")
			if _, err := netip.ParseAddr(h); !ok || err != nil {
				return fmt.Errorf("%q: bad IPv6 host %q", v, host)
			}
		} else if _, err := netip.ParseAddr(host); err != nil && DNSSubdomain(strings.ToLower(host)) != nil {
			return fmt.Errorf("%q: host %q is neither an IP address nor a DNS name", v, host)
		}
	}
	if port == "" {
		return fmt.Errorf("%q has no port", v)
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q: port %q is not a number", v, port)
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return fmt.Errorf("%q: port %s is over 65535", v, port)
		}
	}
	return nil
}
