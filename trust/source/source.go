package source

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/trust"
)

// Source delivers the cluster's own bundle.
type Source interface {
	// Run reads the bundle until ctx ends, calling update with the first valid bundle and
	// then with every bundle whose content (digest) or refresh hint changed. Errors are
	// retried, reported through Status and logs; Run returns nil when ctx ends.
	Run(ctx context.Context, update func(*trust.Bundle)) error
	// Status is the last outcome.
	Status() Status
	// String names the source for logs, e.g. file:/etc/bundle.pem.
	String() string
}

// Status is what a source last saw.
type Status struct {
	Last      *trust.Bundle
	LastGood  time.Time
	LastError error
	ErrorAt   time.Time
}

// Metrics of sources (one set per process, labelled by source kind).
type Metrics struct {
	updates  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	lastGood *prometheus.GaugeVec
}

// NewMetrics registers the source metrics in reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_trust_source_updates_total",
			Help: "Bundles delivered by the cluster's bundle source (content or refresh hint changed).",
		}, []string{"source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_trust_source_errors_total",
			Help: "Failed reads of the cluster's bundle source; the last good bundle stays.",
		}, []string{"source"}),
		lastGood: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_trust_source_last_good_timestamp_seconds",
			Help: "When the bundle source last read a valid bundle.",
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.updates, m.errors, m.lastGood)
	}
	return m
}

// tracker is the state every source shares: last good bundle, last error, dedup.
type tracker struct {
	kind string
	log  *slog.Logger
	m    *Metrics

	mu sync.Mutex
	st Status
}

func newTracker(kind string, log *slog.Logger, m *Metrics) *tracker {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &tracker{kind: kind, log: log.With("source", kind), m: m}
}

func (t *tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// good records a valid bundle and reports whether it differs from the last one.
func (t *tracker) good(b *trust.Bundle) bool {
	t.mu.Lock()
	changed := t.st.Last == nil || t.st.Last.Digest() != b.Digest() || t.st.Last.RefreshHint != b.RefreshHint
	t.st.Last, t.st.LastGood, t.st.LastError = b, time.Now(), nil
	t.mu.Unlock()
	t.m.lastGood.WithLabelValues(t.kind).SetToCurrentTime()
	for _, d := range b.Dropped {
		t.log.Warn("left out of the bundle", "what", d)
	}
	if changed {
		t.m.updates.WithLabelValues(t.kind).Inc()
		t.log.Info("bundle read", "trust_domain", b.TrustDomain.Name(), "roots", len(b.X509Roots), "keys", len(b.Keys), "digest", b.Digest(), "source_sequence", b.Sequence)
	}
	return changed
}

func (t *tracker) fail(err error) {
	t.mu.Lock()
	repeated := t.st.LastError != nil && t.st.LastError.Error() == err.Error()
	t.st.LastError, t.st.ErrorAt = err, time.Now()
	t.mu.Unlock()
	t.m.errors.WithLabelValues(t.kind).Inc()
	if !repeated {
		t.log.Error("bundle source failed; keeping the last good bundle", "err", err)
	}
}

// Options common to every source.
type Options struct {
	Log     *slog.Logger
	Metrics *Metrics
	// Poll is how often file and dev sources look for changes (default 1 s).
	Poll time.Duration
	// DevCADir is the development CA directory for the dev source.
	DevCADir string
}

// Parse builds the bundle source of SPEC for trust domain td (errors are a
// *validate.FieldError naming FieldTrustDomain, FieldSpec or FieldDevCADir):
//
//	file:PATH
//	workload:SOCKET          (unix socket path, or unix:///path)
//	endpoint:URL[,profile=https_web|https_spiffe][,id=SPIFFE-ID][,bundle=PATH][,ca=PATH][,refresh=DURATION]
//	dev                      (the development CA in Options.DevCADir)
func Parse(spec, td string, opts Options) (Source, error) {
	if _, err := trust.ParseTrustDomain(td); err != nil {
		return nil, &validate.FieldError{Field: FieldTrustDomain, Msg: err.Error()}
	}
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "file":
		if arg == "" {
			return nil, specErr("%q: give file:PATH", spec)
		}
		return NewFile(td, arg, opts), nil
	case "workload":
		if arg == "" {
			return nil, specErr("%q: give workload:SOCKET (e.g. workload:/run/spire/sockets/agent.sock)", spec)
		}
		addr := arg
		if !strings.HasPrefix(addr, "unix:") && !strings.HasPrefix(addr, "tcp:") {
			addr = "unix://" + addr
		}
		return NewWorkload(td, addr, opts), nil
	case "endpoint":
		cfg, err := ParseEndpointSpec(td, arg)
		if err != nil {
			return nil, specErr("%q: %v", spec, err)
		}
		return NewEndpoint(cfg, opts)
	case "dev":
		if arg != "" {
			opts.DevCADir = arg
		}
		if opts.DevCADir == "" {
			return nil, &validate.FieldError{Field: FieldDevCADir, Msg: "the dev source needs the development CA directory (or give dev:DIR)"}
		}
		return NewDev(td, opts.DevCADir, opts), nil
	}
	return nil, specErr("%q: use file:PATH, workload:SOCKET, endpoint:URL[,profile=...] or dev", spec)
}

// Fields named by Parse's errors; a command maps them to its flags.
const (
	FieldTrustDomain = "trust domain"
	FieldSpec        = "bundle source"
	FieldDevCADir    = "dev CA directory"
)

func specErr(format string, args ...any) error {
	return &validate.FieldError{Field: FieldSpec, Msg: fmt.Sprintf(format, args...)}
}

// Profiles of a bundle endpoint (SPIFFE federation spec).
const (
	ProfileWeb    = "https_web"
	ProfileSPIFFE = "https_spiffe"
)

// EndpointConfig is a parsed endpoint:URL,... spec.
type EndpointConfig struct {
	TrustDomain string
	URL         string
	Profile     string
	// ID is the endpoint's SPIFFE ID (https_spiffe).
	ID spiffeid.ID
	// BundlePath authenticates an https_spiffe endpoint the first time (operator-supplied);
	// afterwards the latest fetched bundle of the endpoint's trust domain is used.
	BundlePath string
	// CAPath replaces the system roots for https_web (a private web PKI, tests).
	CAPath string
	// Refresh overrides the polling interval (default: the bundle's refresh hint, else 5 min,
	// clamped to 1 s .. 1 h).
	Refresh time.Duration
}

// ParseEndpointSpec parses URL[,key=value...].
func ParseEndpointSpec(td, arg string) (EndpointConfig, error) {
	parts := strings.Split(arg, ",")
	cfg := EndpointConfig{TrustDomain: td, URL: parts[0], Profile: ProfileWeb}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return cfg, fmt.Errorf("endpoint URL %q: must be https://HOST[:PORT]/PATH (the SPIFFE bundle endpoint is always TLS)", cfg.URL)
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return cfg, fmt.Errorf("option %q: want key=value", p)
		}
		switch k {
		case "profile":
			if v != ProfileWeb && v != ProfileSPIFFE {
				return cfg, fmt.Errorf("profile=%s: use %s or %s", v, ProfileWeb, ProfileSPIFFE)
			}
			cfg.Profile = v
		case "id":
			id, err := spiffeid.FromString(v)
			if err != nil {
				return cfg, fmt.Errorf("id=%s: %w", v, err)
			}
			cfg.ID = id
		case "bundle":
			cfg.BundlePath = v
		case "ca":
			cfg.CAPath = v
		case "refresh":
			d, err := time.ParseDuration(v)
			if err != nil || d < time.Second {
				return cfg, fmt.Errorf("refresh=%s: give a duration of at least 1s", v)
			}
			cfg.Refresh = d
		default:
			return cfg, fmt.Errorf("option %q: known options are profile, id, bundle, ca, refresh", k)
		}
	}
	if cfg.Profile == ProfileSPIFFE {
		if cfg.ID.IsZero() {
			return cfg, fmt.Errorf("profile=%s needs id=SPIFFE-ID of the endpoint server", ProfileSPIFFE)
		}
		if cfg.BundlePath == "" {
			return cfg, fmt.Errorf("profile=%s needs bundle=PATH: the bundle that authenticates the endpoint the first time", ProfileSPIFFE)
		}
	}
	return cfg, nil
}
