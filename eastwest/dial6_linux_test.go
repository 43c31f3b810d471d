package eastwest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// loopbackName is the name of this host's loopback interface (lo on Linux).
func loopbackName(t *testing.T) (string, int) {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Name, i.Index
		}
	}
	t.Skip("no loopback interface")
	return "", 0
}

// TestRawSockaddr: the bytes dialSend hands connect(2): sockaddr_in for IPv4 (and
// IPv4-mapped IPv6), sockaddr_in6 for IPv6 with the zone, by interface name or index, as
// sin6_scope_id; a zone naming no interface is an error that names it.
func TestRawSockaddr(t *testing.T) {
	lo, loIndex := loopbackName(t)
	port := func(b []byte) uint16 { return binary.BigEndian.Uint16(b[2:4]) }
	for _, c := range []struct {
		addr   string
		family int
		ip     string
		scope  uint32
	}{
		{"10.1.2.3:8443", syscall.AF_INET, "10.1.2.3", 0},
		{"[::ffff:10.1.2.3]:8443", syscall.AF_INET, "10.1.2.3", 0},
		{"[::1]:8443", syscall.AF_INET6, "::1", 0},
		{"[2001:db8::7]:8443", syscall.AF_INET6, "2001:db8::7", 0},
		{"[fe80::1%" + lo + "]:8443", syscall.AF_INET6, "fe80::1", uint32(loIndex)},
		{"[fe80::1%" + strconv.Itoa(loIndex) + "]:8443", syscall.AF_INET6, "fe80::1", uint32(loIndex)},
		{"[fe80::1%4000000]:8443", syscall.AF_INET6, "fe80::1", 4000000},
	} {
		sa, err := newSockaddr(c.addr)
		if err != nil {
			t.Errorf("%s: %v", c.addr, err)
			continue
		}
		if sa.family != c.family || port(sa.b) != 8443 || int(*(*uint16)(unsafe.Pointer(&sa.b[0]))) != c.family {
			t.Errorf("%s: family %d (in the bytes %d), port %d", c.addr, sa.family, *(*uint16)(unsafe.Pointer(&sa.b[0])), port(sa.b))
			continue
		}
		want := netip.MustParseAddr(c.ip)
		switch c.family {
		case syscall.AF_INET:
			raw := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&sa.b[0]))
			if len(sa.b) != syscall.SizeofSockaddrInet4 || netip.AddrFrom4(raw.Addr) != want {
				t.Errorf("%s: %d bytes, address %v", c.addr, len(sa.b), raw.Addr)
			}
		case syscall.AF_INET6:
			raw := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&sa.b[0]))
			if len(sa.b) != syscall.SizeofSockaddrInet6 || netip.AddrFrom16(raw.Addr) != want || raw.Scope_id != c.scope || raw.Flowinfo != 0 {
				t.Errorf("%s: %d bytes, address %v, scope %d (want %d)", c.addr, len(sa.b), netip.AddrFrom16(raw.Addr), raw.Scope_id, c.scope)
			}
		}
	}
	for addr, want := range map[string]string{
		"[fe80::1%nosuchif0]:8443": `IPv6 zone "nosuchif0": no network interface of that name on this host`,
		"[fe80::1%0]:8443":         `IPv6 zone "0"`,
		"10.1.2.3%lo:8443":         `endpoint address "10.1.2.3%lo:8443"`,
		"fe80::1:8443":             `endpoint address "fe80::1:8443"`,
	} {
		if _, err := newSockaddr(addr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error with %q", addr, err, want)
		}
	}
}

// TestRouteTableIPv6Zones: a table's IPv6 endpoint may carry a zone of this host (name or
// index); one naming no interface is refused at route time, naming the endpoint and zone.
func TestRouteTableIPv6Zones(t *testing.T) {
	lo, loIndex := loopbackName(t)
	for _, a := range []string{"fd00::7", "fe80::1%" + lo, "fe80::1%" + strconv.Itoa(loIndex)} {
		if err := echoTable(net.JoinHostPort(a, "8443")).Validate(); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for a, want := range map[string]string{
		"fe80::1%nosuchif0": `route demo/echo:8443: endpoint [fe80::1%nosuchif0]:8443: IPv6 zone "nosuchif0": no network interface`,
		"10.0.0.1%" + lo:    "is not IP:port",
	} {
		err := (&RouteTable{Services: map[ServiceKey][]Endpoint{{Namespace: "demo", Name: "echo", Port: 8443}: {{Address: a, Port: 8443, Ready: true}}}}).Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", a, err, want)
		}
	}
}

// proxiesTo checks that a gateway in mode routes echo to the backend at addr (each copy
// mode: poll-splice dials with dialSend, io-copy with net.Dialer).
func proxiesTo(t *testing.T, mode CopyMode, b *backend, addr string) {
	t.Helper()
	rt := echoTable(addr)
	if err := rt.Validate(); err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	g := startGateway(t, Config{CopyMode: mode, ConnectAttempts: 1}, rt)
	c, err := dialTLS(t, g.addr, echoSNI, b.pool)
	if err != nil {
		t.Fatalf("%s, %s: %v", mode, addr, err)
	}
	defer c.Close()
	echo(t, c, "over "+addr)
	if n := counter(g.m.connectErrs.WithLabelValues("demo/echo")); n != 0 {
		t.Fatalf("%s, %s: %v connect failures", mode, addr, n)
	}
}

// TestConnectIPv6Loopback: the gateway dials an IPv6 endpoint, ::1, with and without a
// zone (the loopback interface by name and by index; the kernel ignores the scope of a
// loopback address, so this checks the address handling, TestConnectLinkLocalZone the
// scope), through the raw connect and through net.Dialer.
func TestConnectIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine (listen [::1]: %v)", err)
	}
	ln.Close()
	lo, loIndex := loopbackName(t)
	b := startBackend(t, "[::1]:0")
	_, port, _ := net.SplitHostPort(b.addr)
	for _, mode := range []CopyMode{CopyPollSplice, CopyIOCopy} {
		for _, host := range []string{"::1", "::1%" + lo, "::1%" + strconv.Itoa(loIndex)} {
			proxiesTo(t, mode, b, net.JoinHostPort(host, port))
		}
	}
}

const linkLocalChildEnv = "MESHFED_EASTWEST_LINKLOCAL_CHILD"

// TestConnectLinkLocalZone: the gateway dials a link-local endpoint, fe80::1 on the
// loopback interface, whose zone is the scope the kernel needs (without it connect says
// EINVAL). It runs the test binary again in a network namespace of its own (unshare -n, as
// root), where it gives lo the address fe80::1/64: the machine's own interfaces are not
// touched.
func TestConnectLinkLocalZone(t *testing.T) {
	if os.Getenv(linkLocalChildEnv) == "1" {
		linkLocalChild(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace (unshare -n) whose lo gets fe80::1")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if out, err := exec.Command("unshare", "-n", "true").CombinedOutput(); err != nil {
		t.Skipf("the kernel refuses a network namespace here (unshare -n: %v: %s)", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run=^TestConnectLinkLocalZone$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), linkLocalChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestConnectLinkLocalZone")) {
		t.Fatalf("in a network namespace of its own: %v\n%s", err, out)
	}
	t.Logf("in a network namespace of its own:\n%s", out)
}

// linkLocalChild is TestConnectLinkLocalZone inside its network namespace.
func linkLocalChild(t *testing.T) {
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"-6", "addr", "add", "fe80::1/64", "dev", "lo", "nodad"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	lo, loIndex := loopbackName(t)
	b := startBackend(t, "[fe80::1%"+lo+"]:0")
	_, port, _ := net.SplitHostPort(b.addr)
	// Without the zone the kernel refuses the connect: the scope is what makes it work.
	sa, err := newSockaddr(net.JoinHostPort("fe80::1", port))
	if err != nil {
		t.Fatal(err)
	}
	if u, err := dialSend(sa, []byte("x"), time.Second); !errors.Is(err, syscall.EINVAL) {
		if u != nil {
			u.Close()
		}
		t.Fatalf("fe80::1 without a zone: %v; want EINVAL (the kernel needs the scope)", err)
	}
	for _, mode := range []CopyMode{CopyPollSplice, CopyIOCopy} {
		for _, host := range []string{"fe80::1%" + lo, "fe80::1%" + strconv.Itoa(loIndex)} {
			proxiesTo(t, mode, b, net.JoinHostPort(host, port))
		}
	}
}
