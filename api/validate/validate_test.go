package validate

import "testing"

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
