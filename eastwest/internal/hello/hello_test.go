package hello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"testing/iotest"
	"time"
)

var capture = flag.Bool("capture", false, "rewrite testdata/hellos from openssl s_client and curl")

func parseAll(t testing.TB, raw []byte) (*ClientHello, int, error) {
	t.Helper()
	msg, n, err := Assemble(raw, DefaultMaxBytes, nil)
	if err != nil {
		return nil, n, err
	}
	ch, err := Parse(msg)
	return ch, n, err
}

// agree checks that our view of raw matches what crypto/tls's server saw.
func agree(t *testing.T, name string, raw []byte) {
	t.Helper()
	ch, _, err := parseAll(t, raw)
	std := stdParse(raw)
	if std == nil {
		t.Fatalf("%s: crypto/tls refused the hello (test corpus broken)", name)
	}
	if err != nil {
		t.Fatalf("%s: we refused a hello crypto/tls accepts: %v", name, err)
	}
	if ch.ServerName != std.ServerName {
		t.Errorf("%s: SNI %q, crypto/tls %q", name, ch.ServerName, std.ServerName)
	}
	if !slices.Equal(ch.ALPN, std.SupportedProtos) {
		t.Errorf("%s: ALPN %q, crypto/tls %q", name, ch.ALPN, std.SupportedProtos)
	}
	if !slices.Equal(ch.Extensions, std.Extensions) {
		t.Errorf("%s: extensions %v, crypto/tls %v", name, ch.Extensions, std.Extensions)
	}
	if ch.ECH != slices.Contains(std.Extensions, ExtECH) {
		t.Errorf("%s: ECH %v, crypto/tls extensions %v", name, ch.ECH, std.Extensions)
	}
}

func TestCorpusAgreesWithCryptoTLS(t *testing.T) {
	c := corpus(t)
	for name, raw := range c {
		agree(t, name, raw)
	}
	goRaw := c["go-default"]
	if len(goRaw) < 1400 {
		t.Errorf("Go's default hello is %d bytes; expected ~1.6 KiB with X25519MLKEM768", len(goRaw))
	}
	ch, _, _ := parseAll(t, goRaw)
	if ch.ServerName != "outbound_.8443_._.echo.demo.svc.cluster.local" || !slices.Equal(ch.ALPN, []string{"h2", "http/1.1"}) || ch.ECH {
		t.Errorf("go hello parsed as %+v", ch)
	}
	b := c["browser-ech"]
	if len(b) < 1800 || len(b) > 2300 {
		t.Errorf("browser-like hello is %d bytes, want ~2 KiB", len(b))
	}
	if ch, _, _ := parseAll(t, b); !ch.ECH || ch.ServerName != "outbound_.443_._.web.shop.svc.cluster.local" {
		t.Errorf("browser hello parsed as SNI %q ECH %v", ch.ServerName, ch.ECH)
	}
	if ch, _, _ := parseAll(t, c["go-no-sni"]); ch.ServerName != "" {
		t.Errorf("no-SNI hello has SNI %q", ch.ServerName)
	}
}

// A Go client with a real ECH config sends the outer hello with 0xfe0d and the public name.
// (crypto/tls refuses a public name with '_', so a service SNI cannot be one: Go clients
// cannot use ECH through the gateway; browsers' ECH GREASE is covered by BrowserHello.)
func TestRealECHOuterHello(t *testing.T) {
	cfgList, _ := tlstest.ECHConfigList(t, "public.example")
	raw := tlstest.GoHello(t, &tls.Config{ServerName: "secret.inner.example", EncryptedClientHelloConfigList: cfgList, MinVersion: tls.VersionTLS13})
	agree(t, "go-ech", raw)
	ch, _, _ := parseAll(t, raw)
	if !ch.ECH || ch.ServerName != "public.example" {
		t.Fatalf("ECH outer hello: SNI %q ECH %v", ch.ServerName, ch.ECH)
	}
}

func TestFragmentedAcrossRecordsAndSegments(t *testing.T) {
	for name, raw := range corpus(t) {
		want, _, err := parseAll(t, raw)
		if err != nil {
			t.Fatal(name, err)
		}
		for _, size := range []int{1, 2, 3, 4, 5, 7, 100, 511, 1000, 16384} {
			fr := reframe(t, raw, size)
			if size < 200 && len(fr) > DefaultMaxBytes {
				continue // 1-byte records multiply the size by 6: over the cap, tested below
			}
			agree(t, name+"/records="+strconv.Itoa(size), fr)
			readers := map[string]io.Reader{
				"one-byte": iotest.OneByteReader(bytes.NewReader(fr)),
				"random":   &chunkReader{b: fr, r: rand.New(rand.NewPCG(uint64(size), 7))},
			}
			for rn, r := range readers {
				var got ClientHello
				buf := make([]byte, DefaultMaxBytes)
				rawOut, err := Read(r, buf, &got)
				if err != nil {
					t.Fatalf("%s records=%d %s: %v", name, size, rn, err)
				}
				if !bytes.Equal(rawOut, fr) {
					t.Fatalf("%s records=%d %s: replay bytes differ (%d vs %d)", name, size, rn, len(rawOut), len(fr))
				}
				if got.ServerName != want.ServerName || got.ECH != want.ECH || !slices.Equal(got.ALPN, want.ALPN) {
					t.Fatalf("%s records=%d %s: got %+v want %+v", name, size, rn, got, want)
				}
			}
		}
	}
}

// chunkReader returns its bytes in random-sized pieces, as TCP segments arrive.
type chunkReader struct {
	b []byte
	r *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.b), 1+c.r.IntN(300))
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

func TestRefusals(t *testing.T) {
	goRaw := tlstest.GoHello(t, &tls.Config{ServerName: "x.example"})
	msg, _, _ := Assemble(goRaw, DefaultMaxBytes, nil)
	mut := func(f func(m []byte) []byte) []byte { return record(f(bytes.Clone(msg))) }
	huge := make([]byte, 20000)
	huge[0], huge[1], huge[2], huge[3] = typeClientHello, 0, 0x4e, 0x1c
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotTLS},
		{"sslv2", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, ErrNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), ErrNotTLS},
		{"bad-major", []byte{22, 0x16, 1, 0, 5}, ErrNotTLS},
		{"alert-first", []byte{21, 3, 3, 0, 2, 2, 40}, ErrNotTLS},
		{"declared-too-large", []byte{22, 3, 1, 0x40, 0x00, 1, 0, 0x4e, 0x1c}, ErrTooLarge},
		{"records-over-cap", reframe(t, record(huge), 16000), ErrTooLarge},
		{"record-over-2^14", []byte{22, 3, 1, 0x40, 0x01, 1}, ErrMalformed},
		{"empty-record", []byte{22, 3, 1, 0, 0}, ErrMalformed},
		{"not-client-hello", []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, ErrMalformed},
		{"interleaved-alert", append(reframe(t, goRaw, 100)[:105], 21, 3, 3, 0, 2, 2, 40), ErrMalformed},
		{"truncated-body", mut(func(m []byte) []byte { m[1], m[2], m[3] = 0, 0, 30; return m[:34] }), ErrMalformed},
		{"trailing-dot", record(helloWithSNI(t, "x.example."))[0:], ErrMalformed},
	}
	for _, c := range cases {
		_, _, err := parseAll(t, c.in)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// Through Read: a peer that closes mid-hello, and one that says nothing.
	var ch ClientHello
	if _, err := Read(bytes.NewReader(goRaw[:100]), make([]byte, DefaultMaxBytes), &ch); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut hello: %v", err)
	}
	if _, err := Read(bytes.NewReader(nil), make([]byte, DefaultMaxBytes), &ch); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	// A buffer smaller than the hello is the cap.
	if _, err := Read(bytes.NewReader(goRaw), make([]byte, 1000), &ch); !errors.Is(err, ErrTooLarge) {
		t.Errorf("small cap: %v", err)
	}
	// Duplicate extension: crypto/tls refuses it too.
	dupExt := helloWithExtensions(t, [][2]any{{uint16(0), sniData("a.example")}, {uint16(0), sniData("b.example")}})
	if _, _, err := parseAll(t, dupExt); !errors.Is(err, ErrMalformed) {
		t.Errorf("duplicate SNI extension: %v", err)
	}
	if stdParse(dupExt) != nil {
		t.Errorf("crypto/tls accepted a duplicate extension; the parser should follow it")
	}
}

// TestCaptureExternal captures ClientHellos from openssl s_client and curl (when installed)
// over real TCP, checks them, and with -capture saves them under testdata/hellos as seed
// corpus for the fuzz target.
func TestCaptureExternal(t *testing.T) {
	const sni = "outbound_.8443_._.echo.demo.svc.cluster.local"
	tools := []struct {
		name string
		cmd  func(port string) *exec.Cmd
	}{
		{"openssl-s_client", func(port string) *exec.Cmd {
			return exec.Command("openssl", "s_client", "-connect", "127.0.0.1:"+port, "-servername", sni, "-alpn", "h2,http/1.1")
		}},
		{"openssl-s_client-tls12", func(port string) *exec.Cmd {
			return exec.Command("openssl", "s_client", "-connect", "127.0.0.1:"+port, "-servername", sni, "-tls1_2")
		}},
		{"curl", func(port string) *exec.Cmd {
			return exec.Command("curl", "-sk", "--max-time", "5", "--resolve", "echo.example:"+port+":127.0.0.1", "https://echo.example:"+port+"/")
		}},
	}
	for _, tool := range tools {
		bin := tool.cmd("1").Path
		if _, err := exec.LookPath(bin); err != nil {
			t.Logf("%s not installed: skipped", bin)
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		cmd := tool.cmd(port)
		cmd.Stdin = bytes.NewReader(nil)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ch ClientHello
		raw, err := Read(c, make([]byte, DefaultMaxBytes), &ch)
		c.Close()
		ln.Close()
		_ = cmd.Wait()
		if err != nil {
			t.Fatalf("%s: %v", tool.name, err)
		}
		agree(t, tool.name, raw)
		t.Logf("%s: %d bytes, SNI %q, ALPN %q, %d extensions", tool.name, len(raw), ch.ServerName, ch.ALPN, len(ch.Extensions))
		if *capture {
			if err := os.MkdirAll("testdata/hellos", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata/hellos", tool.name+".bin"), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func BenchmarkAssembleParse(b *testing.B) {
	raw := tlstest.GoHello(b, &tls.Config{ServerName: "outbound_.8443_._.echo.demo.svc.cluster.local", NextProtos: []string{"h2"}})
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		msg, _, err := Assemble(raw, DefaultMaxBytes, nil)
		if err != nil {
			b.Fatal(err)
		}
		var ch ClientHello
		if err := ParseInto(msg, &ch); err != nil {
			b.Fatal(err)
		}
		sink = ch.ServerName
	}
}

// BenchmarkRead is the gateway's path: Read from a connection-like reader into a pooled
// buffer, assemble and parse.
func BenchmarkRead(b *testing.B) {
	raw := tlstest.BrowserHello("outbound_.8443_._.echo.demo.svc.cluster.local")
	buf := make([]byte, DefaultMaxBytes)
	r := bytes.NewReader(raw)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(raw)
		ch := new(ClientHello)
		if _, err := Read(r, buf, ch); err != nil {
			b.Fatal(err)
		}
		sink = ch.ServerName
	}
}

var sink string
