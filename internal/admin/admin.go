package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports nil when the component is ready, else why not.
type Check func() error

// Server is an admin HTTP server. Create it with New, add checks and handlers, then Serve.
type Server struct {
	Registry *prometheus.Registry

	mux    *http.ServeMux
	mu     sync.Mutex
	checks map[string]Check
	live   map[string]Check
	srv    *http.Server
	ln     net.Listener
	log    *slog.Logger
}

// New makes a server with a fresh registry holding the Go and process collectors.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{Registry: reg, mux: http.NewServeMux(), checks: map[string]Check{}, live: map[string]Check{}, log: log}
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { s.report(w, s.live) })
	s.mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { s.report(w, s.checks) })
	return s
}

// AddReadiness adds a named check to /readyz.
func (s *Server) AddReadiness(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// AddLiveness adds a named check to /healthz (keep these cheap: a failing liveness check
// gets the process restarted by Kubernetes).
func (s *Server) AddLiveness(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[name] = c
}

// Handle adds a handler (for example /debug/imports).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler is the whole mux, for tests that use httptest.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) report(w http.ResponseWriter, checks map[string]Check) {
	s.mu.Lock()
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	cs := make(map[string]Check, len(checks))
	for n, c := range checks {
		cs[n] = c
	}
	s.mu.Unlock()
	sort.Strings(names)
	var b strings.Builder
	failed := false
	for _, n := range names {
		if err := cs[n](); err != nil {
			failed = true
			fmt.Fprintf(&b, "[-] %s: %v\n", n, err)
		} else {
			fmt.Fprintf(&b, "[+] %s ok\n", n)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if failed {
		w.WriteHeader(http.StatusServiceUnavailable)
		b.WriteString("not ok\n")
	} else {
		b.WriteString("ok\n")
	}
	_, _ = w.Write([]byte(b.String()))
}

// Listen binds addr (HOST:PORT; port 0 picks a free one). Call before Serve so that the
// bound address is known (Addr) before anything depends on it.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address after Listen.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve serves until ctx ends, then shuts down within 5 s.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("admin: Serve before Listen")
	}
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.log.Info("admin server listening", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("admin serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		return nil
	}
}
