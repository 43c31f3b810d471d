package hello

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"
)

// FuzzParse feeds arbitrary bytes to the reassembler and parser. Invariants: no panic; a
// result is the same whether the bytes arrive at once or one at a time; and whenever
// crypto/tls's own server accepts the bytes as a ClientHello, we accept them too and see
// the same SNI, ALPN and extensions (we may refuse more, never less).
// Seeds: real hellos (Go 1.26 crypto/tls, openssl s_client, curl, a Chrome-like hello with
// ECH GREASE), each also split into small records.
// An exec costs ~100 µs (it runs crypto/tls), so minimizing each new interesting input of a
// few KiB can take the whole default -fuzzminimizetime (60 s), during which the exec count
// stands still: for short runs pass -fuzzminimizetime=2s.
func FuzzParse(f *testing.F) {
	for _, raw := range corpus(f) {
		f.Add(raw)
		f.Add(reframe(f, raw, 300))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(checkInput)
}

func checkInput(t *testing.T, data []byte) {
	{
		msg, _, err := Assemble(data, DefaultMaxBytes, nil)
		var ch ClientHello
		if err == nil {
			err = ParseInto(msg, &ch)
		}
		var ch2 ClientHello
		_, err2 := Read(iotest.OneByteReader(bytes.NewReader(data)), make([]byte, DefaultMaxBytes), &ch2)
		if errors.Is(err, ErrIncomplete) {
			if err2 == nil {
				t.Fatalf("Read succeeded where Assemble wants more")
			}
		} else if (err == nil) != (err2 == nil) || ch.ServerName != ch2.ServerName || ch.ECH != ch2.ECH {
			t.Fatalf("Assemble/Parse (%v, %q) and Read (%v, %q) disagree", err, ch.ServerName, err2, ch2.ServerName)
		}
		if errors.Is(err, ErrTooLarge) || len(data) > DefaultMaxBytes {
			return // past our cap crypto/tls may still accept; that is our limit, not a bug
		}
		std := stdParse(data)
		if std == nil {
			return
		}
		if err != nil {
			t.Fatalf("crypto/tls accepted a hello we refuse: %v", err)
		}
		if ch.ServerName != std.ServerName || !slices.Equal(ch.ALPN, std.SupportedProtos) ||
			!slices.Equal(ch.Extensions, std.Extensions) {
			t.Fatalf("disagree with crypto/tls: ours %q %q %v, crypto/tls %q %q %v",
				ch.ServerName, ch.ALPN, ch.Extensions, std.ServerName, std.SupportedProtos, std.Extensions)
		}
	}
}

// TestDifferentialMutations runs the fuzz invariants (including agreement with crypto/tls)
// over a few thousand deterministic mutations of the real hellos, so that `go test`
// exercises the differential without a fuzzing run.
func TestDifferentialMutations(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var seeds [][]byte
	for _, v := range corpus(t) {
		seeds = append(seeds, v)
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := 0; i < n; i++ {
		d := bytes.Clone(seeds[r.IntN(len(seeds))])
		for k := 0; k < 1+r.IntN(4); k++ {
			d[r.IntN(len(d))] = byte(r.IntN(256))
		}
		if !t.Run("mutation", func(t *testing.T) { checkInput(t, d) }) {
			t.Fatalf("input %x", d)
		}
	}
}
