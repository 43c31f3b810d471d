package names

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	a, err := ParseAuthority("Echo.Demo.svc.cluster.local:8443")
	if err != nil {
		t.Fatal(err)
	}
	if a != (Authority{Service: "echo", Namespace: "demo", Domain: "cluster.local", Port: 8443}) || a.String() != "echo.demo.svc.cluster.local:8443" {
		t.Fatalf("got %+v (%s)", a, a)
	}
	for _, tc := range []struct {
		in   string
		ip   bool
		want string
	}{
		{"10.0.0.1:8443", true, ""},
		{"[fd00::1]:8443", true, ""},
		{"fd00::1", true, ""},
		{"echo.demo.svc.cluster.local", false, "no port"},
		{"echo.demo.svc.cluster.local:", false, "bad port"},
		{"echo.demo.svc.cluster.local:08443", false, "bad port"},
		{"echo.demo.svc.cluster.local:65536", false, "bad port"},
		{"echo.demo.svc.cluster.local:0", false, "bad port"},
		{"echo.demo.svc.cluster.local:+443", false, "bad port"},
		{"echo:8443", false, "no namespace"},
		{"echo.demo:8443", false, "no .svc."},
		{"echo.demo.cluster.local:8443", false, "no .svc."},
		{"echo.demo.svc.:8443", false, "domain"},
		{"-echo.demo.svc.cluster.local:8443", false, "service"},
		{"echo.de_mo.svc.cluster.local:8443", false, "namespace"},
		{"", false, "length 0"},
		{strings.Repeat("a", 300) + ":1", false, "length"},
	} {
		_, err := ParseAuthority(tc.in)
		switch {
		case tc.ip && !errors.Is(err, ErrIPAuthority):
			t.Errorf("%q: %v, want ErrIPAuthority", tc.in, err)
		case !tc.ip && (!errors.Is(err, ErrNotServiceAuthority) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want ErrNotServiceAuthority mentioning %q", tc.in, err, tc.want)
		}
	}
}

// FuzzParseAuthority: never panics; whatever parses formats back to the lower-cased input
// (one name, one meaning), and is never an IP literal.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"echo.demo.svc.cluster.local:8443", "10.0.0.1:15008", "[::1]:1", "a.b.svc.c:65535", "A.B.SVC.C:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			return
		}
		if a.String() != strings.ToLower(s) {
			t.Fatalf("%q parsed to %+v, which formats as %q", s, a, a)
		}
		if a.Port == 0 || a.Port > 65535 {
			t.Fatalf("%q: port %d", s, a.Port)
		}
	})
}
