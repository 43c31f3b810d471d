package istio

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	mcp "istio.io/api/mcp/v1alpha1"
)

// Source keeps the Istio resources of every imported service, built from the plans the
// federation serves, and publishes full States to a Server. Update is cheap and never
// blocks (it builds only the services it is given); Run assembles and publishes the State,
// coalescing bursts.
type Source struct {
	srv  *Server
	opts BuildOptions
	log  *slog.Logger

	mu       sync.Mutex
	complete bool                                  // a complete plan has been received
	svcs     map[string]map[string][]*mcp.Resource // service key → type → resources
	skips    map[string][]Skip
	report   *SkipReporter
	kick     chan struct{}
}

// NewSource makes a source publishing to srv.
func NewSource(srv *Server, opts BuildOptions, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "istio-mcp")
	return &Source{srv: srv, opts: opts, log: log, report: NewSkipReporter(log, srv.m.skipped, "istiod (MCP)"),
		svcs: map[string]map[string][]*mcp.Resource{}, skips: map[string][]Skip{}, kick: make(chan struct{}, 1)}
}

// Update applies one pass of plans: services by key, nil for one no longer imported. The
// first call must hold every imported service (federation/xds's first PlanUpdate does): only
// then does the source publish, so istiod never hears an incomplete plan.
func (s *Source) Update(services map[string]*Service) {
	built := make(map[string]map[string][]*mcp.Resource, len(services))
	skips := make(map[string][]Skip, len(services))
	keys := make([]string, 0, len(services))
	for k := range services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		svc := services[k]
		if svc == nil {
			built[k] = nil
			continue
		}
		res, sk, err := BuildService(svc, s.opts)
		if err != nil {
			// Keep what istiod has for this service rather than drop it.
			s.log.Error("cannot build the Istio resources of a service; keeping its last ones (a bug: please report)", "service", k, "err", err)
			continue
		}
		built[k] = res
		skips[k] = sk
	}
	s.mu.Lock()
	for k, res := range built {
		if res == nil {
			delete(s.svcs, k)
			delete(s.skips, k)
			continue
		}
		s.svcs[k] = res
		s.skips[k] = skips[k]
	}
	s.complete = true
	var all []Skip
	for _, sk := range s.skips {
		all = append(all, sk...)
	}
	s.report.Report(all)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Skips lists what was left out of istiod's resources, by service (for debug and status).
func (s *Source) Skips() map[string][]Skip {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]Skip, len(s.skips))
	for k, v := range s.skips {
		if len(v) > 0 {
			out[k] = append([]Skip(nil), v...)
		}
	}
	return out
}

// Run publishes a State after every burst of updates, until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		st, err := s.state()
		if err != nil {
			s.log.Error("cannot assemble the Istio state; serving the last one (a bug: please report)", "err", err)
			continue
		}
		if st != nil {
			s.srv.SetState(st)
			for _, t := range ProducedTypes {
				s.srv.m.resources.WithLabelValues(t).Set(float64(len(st.Type(t).Names)))
			}
		}
	}
}

func (s *Source) state() (*State, error) {
	s.mu.Lock()
	if !s.complete {
		s.mu.Unlock()
		return nil, nil
	}
	byType := map[string][]*mcp.Resource{}
	for _, t := range ProducedTypes {
		byType[t] = []*mcp.Resource{} // produced types are always present, empty or not
	}
	for _, res := range s.svcs {
		for t, rs := range res {
			byType[t] = append(byType[t], rs...)
		}
	}
	s.mu.Unlock()
	return NewState(byType)
}
