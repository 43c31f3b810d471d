package validate

import (
	"errors"
	"testing"

	"github.com/hashicorp/go-multierror"
)

func TestListenAddr(t *testing.T) {
	for _, ok := range []string{":15443", "127.0.0.1:0", "[::1]:15010", "localhost:2379", "0.0.0.0:15443"} {
		if err := ListenAddr(ok); err != nil {
			t.Errorf("ListenAddr(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"15443", "127.0.0.1:", "127.0.0.1:70000", "[::1:1", "bad_host:1", "h:x"} {
		if err := ListenAddr(bad); err == nil {
			t.Errorf("ListenAddr(%q) accepted", bad)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, ok := range []string{"10.0.0.1:15443", "gw.example.com:15443", "[fd00::1]:443"} {
		if err := HostPort(ok); err != nil {
			t.Errorf("HostPort(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{":15443", "10.0.0.1:0", "gw:", "gw", "a b:1"} {
		if err := HostPort(bad); err == nil {
			t.Errorf("HostPort(%q) accepted", bad)
		}
	}
}

func TestDNSLabel(t *testing.T) {
	for _, bad := range []string{"", "East", "-a", "a-", "a_b", "a.b"} {
		if DNSLabel(bad) == nil {
			t.Errorf("DNSLabel(%q) accepted", bad)
		}
	}
	if err := DNSLabel("east-1"); err != nil {
		t.Error(err)
	}
}

// TestErrorsRefs: Errors lists its problems one a line (as errors.Join did) in a
// *multierror.Error; references (Ref) show as field names, Rename and RenameFields name
// them the caller's way, and RefText keeps them for a message built from another's.
func TestErrorsRefs(t *testing.T) {
	var errs Errors
	errs.Add(Ref("Gateways")+"[1]", "differs from %s[0]", Ref("Gateways"))
	errs.Add("port", "use %s too", Ref("Other"))
	err := errs.Err()
	var me *multierror.Error
	if !errors.As(err, &me) || len(me.Errors) != 2 {
		t.Fatalf("want a *multierror.Error of 2, got %T %v", err, err)
	}
	if got, want := err.Error(), "Gateways[1]: differs from Gateways[0]\nport: use Other too"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	flags := map[string]string{"Gateways": "--gateway", "port": "--port", "Other": "--other"}
	name := func(f string) string { return flags[f] }
	if got, want := RenameFields(err, name).Error(), "--gateway[1]: differs from --gateway[0]\n--port: use --other too"; got != want {
		t.Errorf("RenameFields = %q, want %q", got, want)
	}
	outer := &FieldError{Field: "Gateways", Msg: RefText(err)}
	if got, want := outer.Rename(name).Error(), "--gateway: --gateway[1]: differs from --gateway[0]\nport: use --other too"; got != want {
		t.Errorf("through RefText = %q, want %q", got, want)
	}
	cause := errors.New("cause")
	fe := &FieldError{Msg: "see " + Ref("Other"), Err: cause}
	if !errors.Is(fe.Rename(name), cause) || fe.Error() != "see Other" {
		t.Errorf("cause or text lost: %v", fe)
	}
}
