package fault

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      string
	}{
		{"", "cordon", ""},
		{"cordon", "cordon", ""},
		{"blackhole", "blackhole", ""},
		{"reset", "reset", ""},
		{"delay=2s", "delay=2s", ""},
		{"delay=1500ms", "delay=1.5s", ""},
		{"error=0.3", "error=0.3", ""},
		{"error=1", "error=1", ""},
		{"delay", "", "delay needs a duration"},
		{"delay=0s", "", "use more than 0"},
		{"delay=10m", "", "at most 5m0s"},
		{"error=0", "", "more than 0"},
		{"error=1.5", "", "at most 1"},
		{"error=abc", "", "fraction"},
		{"reset=1", "", "takes no value"},
		{"Blackhole", "", "unknown fault"},
		{"drop", "", "unknown fault"},
	} {
		s, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) = %v, %v; want error containing %q", c.in, s, err, c.err)
			}
			continue
		}
		if err != nil || s.String() != c.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, s, err, c.want)
		}
	}
}

func TestStructRoundTrip(t *testing.T) {
	dl := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC)
	for _, f := range []Fault{
		{Spec: Spec{Kind: Blackhole}, ID: "d1", Deadline: dl},
		{Spec: Spec{Kind: Delay, Delay: 2 * time.Second}, ID: "d2", Namespace: "demo", Service: "echo", Deadline: dl},
		{Spec: Spec{Kind: Error, Fraction: 0.25}, ID: "d3", Deadline: dl},
	} {
		s, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		g, err := FromStruct(s)
		if err != nil || g != f {
			t.Errorf("round trip of %v = %v, %v", f, g, err)
		}
	}
}

func TestFromStructRefuses(t *testing.T) {
	f := Fault{Spec: Spec{Kind: Reset}, ID: "d1", Deadline: time.Now()}
	s, _ := f.Struct()
	delete(s.Fields, "deadline")
	if _, err := FromStruct(s); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("no deadline: %v", err)
	}
	f.Kind = Cordon
	s, _ = f.Struct()
	if _, err := FromStruct(s); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("cordon: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "cordon", "delay=2s", "error=0.5", "reset", "delay=-1s", "error=NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err != nil {
			return
		}
		if err := sp.Validate(); err != nil {
			t.Fatalf("Parse(%q) gave an invalid spec: %v", s, err)
		}
		again, err := Parse(sp.String())
		if err != nil || again != sp {
			t.Fatalf("Parse(%q).String() = %q does not parse back: %v, %v", s, sp.String(), again, err)
		}
	})
}
