package fault

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/api/validate"
)

// Kind is what a fault does. The names are a contract (CLI, drill records, xDS metadata).
type Kind string

const (
	// Cordon is no fault at the gateway: the planners treat the cluster as down.
	Cordon Kind = "cordon"
	// Blackhole: the gateway accepts connections and then says nothing, ever (no bytes, no
	// FIN, no RST), the health name included, until the fault ends.
	Blackhole Kind = "blackhole"
	// Reset: new connections and health probes are reset (RST, SO_LINGER 0).
	Reset Kind = "reset"
	// Delay: each new connection's ClientHello is held Delay before it is forwarded; the
	// health name answers that late too.
	Delay Kind = "delay"
	// Error: Fraction of new connections are reset, the others pass.
	Error Kind = "error"
)

// Kinds lists the kinds in the order help texts show them.
var Kinds = []Kind{Cordon, Blackhole, Reset, Delay, Error}

// MaxDelay bounds a delay fault (a longer hold is a blackhole).
const MaxDelay = 5 * time.Minute

// Spec is a fault kind with its parameter: "cordon", "blackhole", "reset",
// "delay=DURATION", "error=FRACTION".
type Spec struct {
	Kind     Kind
	Delay    time.Duration // Delay only
	Fraction float64       // Error only, in (0, 1]
}

// Usage is the syntax of a spec, for error messages and help texts.
const Usage = "cordon, blackhole, reset, delay=DURATION (e.g. delay=2s) or error=FRACTION (e.g. error=0.3)"

// Parse reads a spec's text form. An empty string is Cordon.
func Parse(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Spec{Kind: Cordon}, nil
	}
	name, arg, hasArg := strings.Cut(s, "=")
	sp := Spec{Kind: Kind(name)}
	switch sp.Kind {
	case Cordon, Blackhole, Reset:
		if hasArg {
			return Spec{}, fmt.Errorf("%q: %s takes no value (use %s)", s, name, Usage)
		}
	case Delay:
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil {
			return Spec{}, fmt.Errorf("%q: delay needs a duration, e.g. delay=2s", s)
		}
		sp.Delay = d
	case Error:
		f, err := strconv.ParseFloat(arg, 64)
		if !hasArg || err != nil {
			return Spec{}, fmt.Errorf("%q: error needs the fraction of connections to reset, e.g. error=0.3", s)
		}
		sp.Fraction = f
	default:
		return Spec{}, fmt.Errorf("%q: unknown fault; use %s", s, Usage)
	}
	if err := sp.Validate(); err != nil {
		return Spec{}, fmt.Errorf("%q: %w", s, err)
	}
	return sp, nil
}

// Validate checks the parameter of the kind.
func (s Spec) Validate() error {
	switch s.Kind {
	case Cordon, Blackhole, Reset:
		if s.Delay != 0 || s.Fraction != 0 {
			return fmt.Errorf("%s takes no delay or fraction", s.Kind)
		}
	case Delay:
		if s.Delay <= 0 || s.Delay > MaxDelay {
			return fmt.Errorf("delay %s: use more than 0 and at most %s", s.Delay, MaxDelay)
		}
		if s.Fraction != 0 {
			return errors.New("delay takes no fraction")
		}
	case Error:
		if !(s.Fraction > 0 && s.Fraction <= 1) {
			return fmt.Errorf("error fraction %g: use more than 0 and at most 1 (0.3 resets 30%% of new connections)", s.Fraction)
		}
		if s.Delay != 0 {
			return errors.New("error takes no delay")
		}
	default:
		return fmt.Errorf("unknown fault %q; use %s", s.Kind, Usage)
	}
	return nil
}

// String is the text form Parse reads.
func (s Spec) String() string {
	switch s.Kind {
	case Delay:
		return "delay=" + s.Delay.String()
	case Error:
		return "error=" + strconv.FormatFloat(s.Fraction, 'g', -1, 64)
	case "":
		return string(Cordon)
	}
	return string(s.Kind)
}

// AtGateway reports whether the gateways carry this fault out (every kind but Cordon).
func (s Spec) AtGateway() bool { return s.Kind != Cordon && s.Kind != "" }

// Fault is one fault a gateway carries out: a spec, a scope and an absolute deadline.
type Fault struct {
	Spec
	// ID is the drill's id (logs and metrics).
	ID string
	// Namespace and Service narrow the fault to one service's connections; both empty
	// means every connection and the health name.
	Namespace, Service string
	// Deadline is when the fault ends, by the gateway's own clock, whatever its federation
	// says or does not say by then.
	Deadline time.Time
}

// Normal is f with its deadline in UTC and without a monotonic clock reading, so that
// equal faults compare equal with ==.
func (f Fault) Normal() Fault {
	f.Deadline = f.Deadline.UTC().Round(0)
	return f
}

// Global reports whether the fault covers every connection and the health name.
func (f *Fault) Global() bool { return f.Service == "" }

// Covers reports whether the fault covers connections to namespace/service.
func (f *Fault) Covers(namespace, service string) bool {
	return f.Service == "" || (f.Namespace == namespace && f.Service == service)
}

// Active reports whether the fault is in force at now.
func (f *Fault) Active(now time.Time) bool { return now.Before(f.Deadline) }

// Validate checks every field.
func (f *Fault) Validate() error {
	var errs validate.Errors
	if f.Kind == Cordon {
		errs.Add("kind", "cordon is not carried out by gateways")
	} else {
		errs.AddErr("kind", f.Spec.Validate())
	}
	if f.ID == "" {
		errs.Add("id", "must name the drill")
	}
	if (f.Namespace == "") != (f.Service == "") {
		errs.Add("service", "give both namespace and service, or neither for every connection")
	}
	if f.Deadline.IsZero() {
		errs.Add("deadline", "must be set: a fault always ends by itself")
	}
	return errs.Err()
}

// String describes the fault for logs.
func (f *Fault) String() string {
	scope := "all"
	if f.Service != "" {
		scope = f.Namespace + "/" + f.Service
	}
	return fmt.Sprintf("%s (drill %s, %s, until %s)", f.Spec, f.ID, scope, f.Deadline.UTC().Format(time.RFC3339Nano))
}

// MetadataKey is the filter_metadata key under which the federation puts the fault on
// each inbound CDS cluster it covers.
const MetadataKey = "meshfed.fault"

// Struct is the metadata form: {"id", "kind", "delay"?, "fraction"?, "namespace"?,
// "service"?, "deadline" (RFC 3339)}.
func (f *Fault) Struct() (*structpb.Struct, error) {
	m := map[string]any{
		"id":       f.ID,
		"kind":     string(f.Kind),
		"deadline": f.Deadline.UTC().Format(time.RFC3339Nano),
	}
	if f.Kind == Delay {
		m["delay"] = f.Delay.String()
	}
	if f.Kind == Error {
		m["fraction"] = f.Fraction
	}
	if f.Service != "" {
		m["namespace"], m["service"] = f.Namespace, f.Service
	}
	return structpb.NewStruct(m)
}

// FromStruct reads the metadata form back and validates it. Unknown fields are ignored
// (a newer federation may say more).
func FromStruct(s *structpb.Struct) (Fault, error) {
	str := func(k string) string { return s.GetFields()[k].GetStringValue() }
	f := Fault{ID: str("id"), Namespace: str("namespace"), Service: str("service")}
	f.Kind = Kind(str("kind"))
	var errs validate.Errors
	if d := str("delay"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			errs.Add("delay", "%q is not a duration", d)
		}
		f.Delay = v
	}
	f.Fraction = s.GetFields()["fraction"].GetNumberValue()
	if d := str("deadline"); d != "" {
		t, err := time.Parse(time.RFC3339Nano, d)
		if err != nil {
			errs.Add("deadline", "%q is not an RFC 3339 time", d)
		}
		f.Deadline = t.UTC()
	}
	if errs.Len() == 0 {
		errs.AddErr("", f.Validate())
	}
	if err := errs.Err(); err != nil {
		return Fault{}, fmt.Errorf("%s: %w", MetadataKey, err)
	}
	return f, nil
}
