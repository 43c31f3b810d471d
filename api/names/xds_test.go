package names

import "testing"

func TestInboundClusterName(t *testing.T) {
	n := InboundClusterName("demo", "echo", 8443, "")
	if n != "inbound|8443||echo.demo.svc.cluster.local" {
		t.Fatalf("got %q", n)
	}
	sp, d, err := ParseInboundClusterName(n)
	if err != nil || sp != (ServicePort{Namespace: "demo", Name: "echo", Port: 8443}) || d != DefaultDomain {
		t.Fatalf("parse: %+v %q %v", sp, d, err)
	}
	for _, bad := range []string{
		"", "outbound|8443||echo.demo.svc.clusterset.local", "inbound|0||a.b.svc.x", "inbound|08||a.b.svc.x",
		"inbound|70000||a.b.svc.x", "inbound|80|a.b.svc.x", "inbound|80||a.svc.x", "inbound|80||a.b.x.y",
		"inbound|80||A_.b.svc.x", "inbound|80||a.b.svc.", "inbound|80||a.b.svc.x..y",
	} {
		if _, _, err := ParseInboundClusterName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseInboundClusterName(f *testing.F) {
	for _, s := range []string{
		"inbound|8443||echo.demo.svc.cluster.local", "inbound|1||a.b.svc.c", "inbound|65535||x-y.z.svc.example.com",
		"inbound|80||a.b.svc.", "inbound||||", "outbound|80||a.b.svc.clusterset.local",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, d, err := ParseInboundClusterName(s)
		if err != nil {
			return
		}
		if got := InboundClusterName(sp.Namespace, sp.Name, sp.Port, d); got != s {
			t.Fatalf("%q parsed to %+v %q which formats as %q", s, sp, d, got)
		}
	})
}
