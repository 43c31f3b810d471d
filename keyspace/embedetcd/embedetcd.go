package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// Config says how to run the server.
type Config struct {
	// DataDir holds the database; empty means a fresh temporary directory removed on Close.
	DataDir string
	// ClientAddr is HOST:PORT for clients (port 0 picks a free one). Default 127.0.0.1:2379.
	ClientAddr string
	// PeerAddr is HOST:PORT for the peer listener (unused by a single member); default a
	// free port on the client host. A member of a multi-member cluster needs a concrete one:
	// it is advertised to the other members.
	PeerAddr string
	// Name of the member (default "meshfed").
	Name string
	// InitialCluster lists every member of a new multi-member cluster, NAME=http://HOST:PORT
	// separated by commas (etcd's --initial-cluster); it must name this member with its
	// PeerAddr. Empty: a single member. Once DataDir holds data, etcd reads the membership
	// from it and this is ignored (a restarted member rejoins by itself).
	InitialCluster string
	// ClusterToken keeps two clusters with the same member URLs apart (etcd's
	// --initial-cluster-token; default etcd's).
	ClusterToken string
	// TLS, when set, serves clients over TLS with these files; ClientCertAuth requires
	// client certificates signed by TrustedCAFile.
	TLS *TLSFiles
	// NoFsync trades durability for speed (tests only).
	NoFsync bool
	// AutoCompactionRetention, when set, compacts history periodically (e.g. "1h").
	AutoCompactionRetention string
	// LogLevel of etcd's own logger (default "error": etcd is chatty at info).
	LogLevel string
	// Log receives etcd's logs (default slog.Default()).
	Log *slog.Logger
	// BcryptCost of etcd auth passwords (0: etcd's default, 10). Tests with etcd auth use
	// the minimum (4): under the race detector every authentication at cost 10 takes
	// seconds.
	BcryptCost uint
}

// TLSFiles are PEM files for the client listener.
type TLSFiles struct {
	CertFile, KeyFile, TrustedCAFile string
	ClientCertAuth                   bool
}

// Server is a running embedded etcd.
type Server struct {
	etcd    *embed.Etcd
	closing atomic.Bool
	tmpDir  string
	scheme  string
	Clients []string // client endpoints as HOST:PORT
}

// Start starts the server and waits until it serves (or 30 s pass).
func Start(ctx context.Context, c Config) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	if cfg.Name == "" {
		cfg.Name = "meshfed"
	}
	s := &Server{scheme: "http"}
	cfg.Dir = c.DataDir
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "meshfed-etcd-")
		if err != nil {
			return nil, fmt.Errorf("etcd data dir: %w", err)
		}
		s.tmpDir, cfg.Dir = d, d
	}
	if c.TLS != nil {
		s.scheme = "https"
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.TrustedCAFile,
			ClientCertAuth: c.TLS.ClientCertAuth,
		}
	}
	clientAddr := c.ClientAddr
	if clientAddr == "" {
		clientAddr = "127.0.0.1:2379"
	}
	host, _, err := net.SplitHostPort(clientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd client address %q: want HOST:PORT: %w", clientAddr, err)
	}
	peerAddr := c.PeerAddr
	if peerAddr == "" {
		// A single member never talks to peers, but etcd needs a peer URL that it can
		// advertise in its own cluster list: reserve a concrete free port.
		p, err := freePort(host)
		if err != nil {
			return nil, err
		}
		peerAddr = net.JoinHostPort(host, fmt.Sprint(p))
	}
	cu := url.URL{Scheme: s.scheme, Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if c.InitialCluster != "" {
		if err := CheckInitialCluster(c.InitialCluster, cfg.Name, pu.String()); err != nil {
			return nil, err
		}
		cfg.InitialCluster = c.InitialCluster
	}
	if c.ClusterToken != "" {
		cfg.InitialClusterToken = c.ClusterToken
	}
	cfg.UnsafeNoFsync = c.NoFsync
	if c.BcryptCost != 0 {
		cfg.BcryptCost = c.BcryptCost
	}
	cfg.LogLevel = c.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("etcd log level %q: use debug, info, warn or error", cfg.LogLevel)
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(log, lvl, &s.closing))
	if c.AutoCompactionRetention != "" {
		cfg.AutoCompactionMode = embed.CompactorModePeriodic
		cfg.AutoCompactionRetention = c.AutoCompactionRetention
	}
	// Progress notifications let watchers know they are current even when idle.
	cfg.WatchProgressNotifyInterval = 5 * time.Second
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("start embedded etcd on %s: %w", clientAddr, err)
	}
	s.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		s.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		s.Close()
		if c.InitialCluster != "" {
			return nil, errors.New("embedded etcd did not become ready within 30s: a member serves only once a majority of the initial cluster runs (start the other members, and check that their peer addresses reach each other)")
		}
		return nil, errors.New("embedded etcd did not become ready within 30s")
	}
	for _, l := range e.Clients {
		s.Clients = append(s.Clients, l.Addr().String())
	}
	slog.Debug("embedded etcd ready", "clients", s.Clients, "dir", cfg.Dir)
	return s, nil
}

// Endpoint is the first client endpoint as a URL (http:// or https://).
func (s *Server) Endpoint() string { return s.scheme + "://" + s.Clients[0] }

// Err reports fatal server errors.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Etcd exposes the underlying server (tests use it to compact or inspect).
func (s *Server) Etcd() *embed.Etcd { return s.etcd }

// Close stops the server and removes a temporary data dir. A second Close does nothing.
func (s *Server) Close() {
	if s.closing.Swap(true) {
		return
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.tmpDir != "" {
		_ = os.RemoveAll(s.tmpDir)
	}
}

// CheckInitialCluster checks that initial (NAME=URL,...) is well formed and lists name
// at peerURL.
func CheckInitialCluster(initial, name, peerURL string) error {
	found := false
	seen := map[string]bool{}
	for _, m := range strings.Split(initial, ",") {
		n, u, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok || n == "" || u == "" {
			return fmt.Errorf("initial cluster member %q: want NAME=http://HOST:PORT", m)
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return fmt.Errorf("initial cluster member %q: the peer URL %q is not http://HOST:PORT", m, u)
		}
		if seen[n] {
			return fmt.Errorf("initial cluster names member %q twice", n)
		}
		seen[n] = true
		if n == name {
			if u != peerURL {
				return fmt.Errorf("initial cluster gives member %q the peer URL %s, but it listens for peers at %s", name, u, peerURL)
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("initial cluster %q does not list this member %q", initial, name)
	}
	return nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free peer port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
