package names

import (
	"strings"
	"testing"
)

func TestParseSNI(t *testing.T) {
	tests := []struct {
		in      string
		want    SNI
		wantErr bool
	}{
		{in: "outbound_.8443_._.echo.demo.svc.cluster.local", want: SNI{Port: 8443, Service: "echo", Namespace: "demo", Domain: "cluster.local"}},
		{in: "outbound_.80_.v1_.reviews.default.svc.cluster.local", want: SNI{Port: 80, Subset: "v1", Service: "reviews", Namespace: "default", Domain: "cluster.local"}},
		{in: "OUTBOUND_.80_._.Reviews.Default.svc.corp.example", want: SNI{Port: 80, Service: "reviews", Namespace: "default", Domain: "corp.example"}},
		{in: "outbound_.0_._.echo.demo.svc.cluster.local", wantErr: true},
		{in: "outbound_.08443_._.echo.demo.svc.cluster.local", wantErr: true},
		{in: "outbound_.65536_._.echo.demo.svc.cluster.local", wantErr: true},
		{in: "outbound_.8443_._.echo.demo.cluster.local", wantErr: true},
		{in: "outbound_.8443_._.echo.svc.cluster.local", wantErr: true},
		{in: "outbound_.8443_._.echo.demo.svc.", wantErr: true},
		{in: "outbound_.8443_.a.b_.echo.demo.svc.cluster.local", wantErr: true},
		{in: "outbound|8443||echo.demo.svc.cluster.local", wantErr: true},
		{in: "echo.demo.svc.cluster.local", wantErr: true},
		{in: HealthSNI, wantErr: true},
		{in: "", wantErr: true},
		{in: "outbound_.8443_._.echo.demo.svc.cluster.local.", wantErr: true},
		{in: "outbound_.8443_._." + strings.Repeat("a", 64) + ".demo.svc.cluster.local", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSNI(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseSNI(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("ParseSNI(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestSNIRoundTrip(t *testing.T) {
	s := SNI{Port: 15443, Subset: "v2", Service: "api", Namespace: "prod", Domain: "cluster.local"}
	got, err := ParseSNI(s.String())
	if err != nil || got != s {
		t.Fatalf("round trip %q: got %+v, %v", s.String(), got, err)
	}
	if got := ServiceSNI("demo", "echo", 8443); got != "outbound_.8443_._.echo.demo.svc.cluster.local" {
		t.Fatalf("ServiceSNI = %q", got)
	}
}

func TestXDSNames(t *testing.T) {
	if got := ClusterName("demo", "echo", 8443); got != "outbound|8443||echo.demo.svc.clusterset.local" {
		t.Fatalf("ClusterName = %q", got)
	}
	if got := ListenerName("demo", "echo", 8443); got != "echo.demo.svc.clusterset.local:8443" {
		t.Fatalf("ListenerName = %q", got)
	}
	want := ServicePort{Namespace: "demo", Name: "echo", Port: 8443}
	if sp, err := ParseClusterName(ClusterName("demo", "echo", 8443)); err != nil || sp != want {
		t.Fatalf("ParseClusterName = %+v, %v", sp, err)
	}
	if sp, err := ParseListenerName(ListenerName("demo", "echo", 8443)); err != nil || sp != want {
		t.Fatalf("ParseListenerName = %+v, %v", sp, err)
	}
	for _, bad := range []string{"", "outbound|x||echo.demo.svc.clusterset.local", "outbound|80||echo.svc.clusterset.local", "echo.demo.svc.cluster.local:80", "echo.demo.svc.clusterset.local"} {
		if _, err := ParseClusterName(bad); err == nil {
			t.Errorf("ParseClusterName(%q) accepted", bad)
		}
		if _, err := ParseListenerName(bad); err == nil && !strings.HasPrefix(bad, "outbound") {
			t.Errorf("ParseListenerName(%q) accepted", bad)
		}
	}
}

func FuzzParseSNI(f *testing.F) {
	for _, s := range []string{"outbound_.8443_._.echo.demo.svc.cluster.local", "outbound_.80_.v1_.reviews.default.svc.cluster.local", HealthSNI, "", "outbound_._._..", "outbound_.1_._.a.b.svc.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSNI(in)
		if err != nil {
			return
		}
		// Anything accepted must format back to the same (lower-cased) name: the gateway
		// routes on the parsed form, so two spellings must never mean two things.
		if got := s.String(); got != strings.ToLower(in) {
			t.Fatalf("ParseSNI(%q).String() = %q", in, got)
		}
		if s.Port == 0 || s.Port > 65535 {
			t.Fatalf("port %d accepted", s.Port)
		}
	})
}
