package faultproxy

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from Addr to a target, until told to fail.
type Proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	cond  *sync.Cond
	mode  string // pass, blackhole, down
	ln    net.Listener
	conns map[net.Conn]bool
	held  []net.Conn
	wg    sync.WaitGroup
}

// New listens on listen (HOST:PORT, port 0 for a free one) and forwards to target.
func New(listen, target string) (*Proxy, error) {
	p := &Proxy{target: target, mode: "pass", conns: map[net.Conn]bool{}}
	p.cond = sync.NewCond(&p.mu)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("fault proxy listen %s: %w", listen, err)
	}
	p.ln, p.addr = ln, ln.Addr().String()
	p.wg.Add(1)
	go p.serve(ln)
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.addr }

// SetTarget changes where new connections go (a restarted server on another port).
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *Proxy) serve(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		switch p.mode {
		case "blackhole":
			p.held = append(p.held, c)
			p.mu.Unlock()
		case "down":
			p.mu.Unlock()
			rst(c)
		default:
			p.mu.Unlock()
			p.connect(c)
		}
	}
}

func (p *Proxy) connect(c net.Conn) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		rst(c)
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	p.wg.Add(2)
	go p.copy(up, c)
	go p.copy(c, up)
}

// copy forwards src to dst; while blackholed, bytes read wait (as if in flight) until
// Restore.
func (p *Proxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.mode == "blackhole" {
				p.cond.Wait()
			}
			down := p.mode == "down"
			p.mu.Unlock()
			if down {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Kill refuses new connections and resets every open one.
func (p *Proxy) Kill() {
	p.mu.Lock()
	p.mode = "down"
	_ = p.ln.Close()
	for c := range p.conns {
		rst(c)
	}
	for _, c := range p.held {
		rst(c)
	}
	p.held = nil
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Blackhole stalls every open connection and holds new ones unanswered.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.mode = "blackhole"
	p.mu.Unlock()
}

// Restore listens again if killed, lets stalled bytes through and connects held
// connections.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "down" {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return fmt.Errorf("fault proxy re-listen %s: %w", p.addr, err)
		}
		p.ln = ln
		p.wg.Add(1)
		go p.serve(ln)
	}
	p.mode = "pass"
	held := p.held
	p.held = nil
	p.cond.Broadcast()
	for _, c := range held {
		go p.connect(c)
	}
	return nil
}

// Close kills the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.Kill()
	p.wg.Wait()
}
