package main

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The replayed connection: the same bytes a proxy sees for one TLS connection of oneConn
// (a real ClientHello, the server's first flight, the client's Finished with the 32-byte
// request, the server's tickets with the echo, then both FINs), with no cryptography at
// either end. A proxy cannot tell the two apart after the hello, which it parses for the
// name; what changes is the ends' CPU: a handshake at each end costs the client and the
// backend ~0.9 ms per connection on this machine, and the round-to-round noise of that
// baseline (±100-200 µs) is larger than the differences between proxies that the added
// machine column is meant to show. Replayed, the ends cost little, so the column reads
// the proxy and the kernel's work for its second connection.

// replayALPN marks the replay client's ClientHello: the echo backend answers a hello that
// carries it with the replayed flights, any other with a TLS server.
const replayALPN = "meshfed-bench-replay"

// flights are the sizes, in bytes, of one oneConn exchange after the ClientHello: the
// server's first flight (S1), the client's second (C2), the server's second (S2).
type flights struct{ S1, C2, S2 uint32 }

// measureFlights runs oneConn's exchange once over an in-memory pipe, the backend's TLS
// configuration at one end and the load generator's at the other, and counts the bytes of
// each flight as the client sees them.
func measureFlights(server *tls.Config) (flights, error) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	done := make(chan error, 1)
	go func() {
		tc := tls.Server(c2, server)
		buf := make([]byte, 512)
		n, err := tc.Read(buf)
		if err == nil {
			_, err = tc.Write(buf[:n])
		}
		done <- err
	}()
	cc := &countConn{Conn: c1}
	c1.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(cc, clientTLS)
	msg := make([]byte, 32)
	if _, err := tc.Write(msg); err != nil {
		return flights{}, fmt.Errorf("measuring the flights: %w", err)
	}
	if _, err := io.ReadFull(tc, msg); err != nil {
		return flights{}, fmt.Errorf("measuring the flights: %w", err)
	}
	if err := <-done; err != nil {
		return flights{}, fmt.Errorf("measuring the flights: server: %w", err)
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	// cc.flights: the hello (written), S1 (read), C2 (written), S2 (read).
	if len(cc.flights) != 4 || cc.flights[0] <= 0 || cc.flights[1] >= 0 || cc.flights[2] <= 0 || cc.flights[3] >= 0 {
		return flights{}, fmt.Errorf("measuring the flights: want write, read, write, read, got %v", cc.flights)
	}
	return flights{S1: uint32(-cc.flights[1]), C2: uint32(cc.flights[2]), S2: uint32(-cc.flights[3])}, nil
}

// countConn counts bytes by flight: a run of writes is one positive entry, a run of reads
// one negative entry.
type countConn struct {
	net.Conn
	mu      sync.Mutex
	flights []int
}

func (c *countConn) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := len(c.flights); k > 0 && (c.flights[k-1] > 0) == (n > 0) {
		c.flights[k-1] += n
		return
	}
	c.flights = append(c.flights, n)
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.add(-n)
	}
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.add(n)
	}
	return n, err
}

// replayServe answers a replay client after its hello: S1 bytes (the first 12 carry the
// three sizes, so the client needs no configuration), then reads C2 bytes, writes S2
// bytes, and closes when the client does.
func replayServe(c net.Conn, f flights) error {
	out := make([]byte, max(f.S1, f.S2))
	binary.BigEndian.PutUint32(out[0:], f.S1)
	binary.BigEndian.PutUint32(out[4:], f.C2)
	binary.BigEndian.PutUint32(out[8:], f.S2)
	if _, err := c.Write(out[:f.S1]); err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, c, int64(f.C2)); err != nil {
		return err
	}
	clear(out[:12])
	if _, err := c.Write(out[:f.S2]); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, c)
	return err
}

// replayHello is the replay client's ClientHello: the echo service's name and replayALPN.
var replayHello = sync.OnceValue(func() []byte { return rawHello(sniEcho, replayALPN) })

// oneReplay is oneConn's exchange replayed: TCP connect, a real ClientHello, the flights'
// bytes each way, close.
func oneReplay(addr string) error {
	c, err := dialer().Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(replayHello()); err != nil {
		return err
	}
	var h [12]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return fmt.Errorf("replay: the server's first flight: %w", err)
	}
	f := flights{binary.BigEndian.Uint32(h[0:]), binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint32(h[8:])}
	if f.S1 < 12 || f.S1 > 64<<10 || f.C2 > 64<<10 || f.S2 > 64<<10 {
		return fmt.Errorf("replay: the server sent flight sizes %+v: not a replay backend", f)
	}
	if _, err := io.CopyN(io.Discard, c, int64(f.S1-12)); err != nil {
		return err
	}
	if _, err := c.Write(make([]byte, f.C2)); err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, c, int64(f.S2)); err != nil {
		return err
	}
	return nil
}

// peekHello reads one TLS record (the ClientHello the clients send) and returns it whole.
func peekHello(c net.Conn) ([]byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return nil, err
	}
	n := int(h[3])<<8 | int(h[4])
	rec := make([]byte, 5+n)
	copy(rec, h[:])
	if _, err := io.ReadFull(c, rec[5:]); err != nil {
		return nil, err
	}
	return rec, nil
}

// prefixConn is a connection whose first reads return bytes already read from it.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// echoOrReplay serves one connection of the echo backend: the replayed flights when the
// hello carries replayALPN, else a TLS echo server (the hello handed to it as read).
func echoOrReplay(c net.Conn, cfg *tls.Config, f flights) error {
	rec, err := peekHello(c)
	if err != nil {
		return err
	}
	if bytes.Contains(rec, []byte(replayALPN)) {
		return replayServe(c, f)
	}
	tc := tls.Server(&prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(rec), c)}, cfg)
	buf := make([]byte, 512)
	for {
		n, err := tc.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tc.Write(buf[:n]); err != nil {
			return err
		}
	}
}
