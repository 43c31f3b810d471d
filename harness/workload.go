package harness

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/meshfed/meshfed/internal/testpki"
)

// Workload is a demo TLS server: for every line it reads it answers
// "<cluster> <workload>: <line>", so a caller sees which cluster served it.
type Workload struct {
	Cluster string
	Name    string
	Addr    string
	Cert    tls.Certificate
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

// StartWorkload serves TLS on addr (HOST:PORT, port 0 for a free one) with cfg, or when
// cfg is nil with a fresh self-signed certificate (internal/testpki) for the DNS name and
// common name <name>.<cluster>.workload.
func StartWorkload(cluster, name, addr string, cfg *tls.Config) (*Workload, error) {
	if cfg == nil {
		dns := name + "." + cluster + ".workload"
		cert, err := testpki.Make(testpki.Spec{CN: dns, DNS: []string{dns}}, nil)
		if err != nil {
			return nil, err
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert.TLS()}, MinVersion: tls.VersionTLS12}
	}
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("workload %s/%s listen %s: %w", cluster, name, addr, err)
	}
	w := &Workload{Cluster: cluster, Name: name, Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	if len(cfg.Certificates) > 0 {
		w.Cert = cfg.Certificates[0]
	}
	w.wg.Add(1)
	go w.serve()
	return w, nil
}

func (w *Workload) serve() {
	defer w.wg.Done()
	for {
		c, err := w.ln.Accept()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.conns[c] = struct{}{}
		w.mu.Unlock()
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer func() {
				w.mu.Lock()
				delete(w.conns, c)
				w.mu.Unlock()
				c.Close()
			}()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(c, "%s %s: %s", w.Cluster, w.Name, line); err != nil {
					return
				}
			}
		}()
	}
}

// Close stops the workload and its connections.
func (w *Workload) Close() {
	w.ln.Close()
	w.mu.Lock()
	for c := range w.conns {
		c.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}
