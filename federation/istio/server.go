package istio

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/api/validate"
)

// Options tune the MCP server.
type Options struct {
	// Listen is the address istiod's `xds://` config source points at (required).
	Listen string
	// ServerTLS, when set, serves TLS (istiod's config-source client does TLS without a client
	// certificate: do not require one). nil serves plaintext.
	ServerTLS *tls.Config
	// StateFile, when set, keeps the last good state on disk: it is loaded at start (so a
	// restarted server answers istiod before the federation has planned anything, or while
	// etcd is down) and rewritten after every change.
	StateFile string
	// IstiodXDS, when set, is where the server reaches each connected istiod's plaintext xDS
	// (istiod's --grpcAddr, :15010 in an Istio install) to follow its PCDS like a sidecar's
	// agent does: the roots istiod gives its proxies (ConnStatus.Roots), which the rotation
	// gates wait for. ":PORT" dials the istiod stream's peer address at PORT (a federation
	// fed by istiods directly, or by `meshfed istio source` relays in istiod's pods);
	// "HOST:PORT" dials that address (a relay beside one istiod: 127.0.0.1:15010). Empty:
	// no probe (the gates then wait, saying so, for every cluster that feeds istiod).
	IstiodXDS string
}

// Server is the MCP-over-xDS server: state-of-the-world ADS, every type answered with its
// full state (empty for the types meshfed does not produce), pushes only for the types whose
// version changed. Make it with NewServer, give it states with SetState, Run it.
type Server struct {
	opts Options
	log  *slog.Logger
	m    *metrics

	lnMu sync.Mutex
	ln   net.Listener

	mu       sync.Mutex
	state    *State
	stateAt  time.Time
	fromDisk bool
	changed  chan struct{} // closed and replaced on every SetState
	conns    map[int64]*conn
	nextID   int64
	unknown  map[string]bool // types asked for that are not in KnownTypes (logged once)
	nackSeen map[string]bool // type + reason (logged once)
	nacks    map[[2]string]uint64
	statusCh chan struct{} // closed and replaced whenever Report would change

	nonce atomic.Int64
}

// NewServer makes a server; reg receives its metrics (nil: not registered).
func NewServer(log *slog.Logger, reg prometheus.Registerer, opts Options) (*Server, error) {
	if opts.Listen == "" {
		return nil, errors.New("istio mcp: a listen address is required")
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: log.With("component", "istio-mcp"), m: m, changed: make(chan struct{}),
		conns: map[int64]*conn{}, unknown: map[string]bool{}, nackSeen: map[string]bool{},
		nacks: map[[2]string]uint64{}, statusCh: make(chan struct{})}
	if opts.StateFile != "" {
		st, at, err := ReadStateFile(opts.StateFile)
		switch {
		case err == nil:
			s.state, s.stateAt, s.fromDisk = st, at, true
			s.log.Info("serving the last good Istio state from disk until the federation plans", "file", opts.StateFile, "saved_at", at, "types", st.Types())
		case errors.Is(err, fs.ErrNotExist):
		default:
			// A damaged file is not fatal: the server waits for the first plan instead.
			s.log.Warn("cannot read the last good Istio state; waiting for the first plan", "file", opts.StateFile, "err", err)
		}
	}
	return s, nil
}

// SetState publishes a new full state; streams get the types whose version changed.
func (s *Server) SetState(st *State) {
	if st == nil {
		return
	}
	s.mu.Lock()
	old := s.state
	s.state, s.stateAt, s.fromDisk = st, time.Now(), false
	close(s.changed)
	s.changed = make(chan struct{})
	s.statusChangedLocked()
	s.mu.Unlock()
	changed := 0
	for _, t := range unionTypes(old, st) {
		if old.Type(t).Version != st.Type(t).Version {
			changed++
		}
	}
	if changed > 0 && s.opts.StateFile != "" {
		if err := st.WriteFile(s.opts.StateFile); err != nil {
			s.m.saveErrors.Inc()
			s.log.Error("cannot save the Istio state (an istiod restart while the federation is down would get an older state)", "file", s.opts.StateFile, "err", err)
		}
	}
}

func unionTypes(a, b *State) []string {
	seen := map[string]bool{}
	for _, s := range []*State{a, b} {
		if s == nil {
			continue
		}
		for t := range s.types {
			seen[t] = true
		}
	}
	var out []string
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// State returns the state being served (nil before the first).
func (s *Server) State() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Ready is nil once the server has a state to serve (the first plan, or the last good state
// from disk).
func (s *Server) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		return errors.New("istio mcp: no plan yet (and no last good state on disk)")
	}
	return nil
}

// FieldListen is Options.Listen as Listen's errors (*validate.FieldError) refer to it
// (validate.Ref): a command names its flag.
const FieldListen = "istio Options.Listen"

// Listen binds the address (Run does it if not done). Its error is a *validate.FieldError
// referring to FieldListen.
func (s *Server) Listen() error {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return &validate.FieldError{Msg: fmt.Sprintf("istio mcp listen %s (%s): %v", s.opts.Listen, validate.Ref(FieldListen), err), Err: err}
	}
	s.ln = ln
	return nil
}

// Addr is the bound address ("" before Listen).
func (s *Server) Addr() string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run serves until ctx ends. Streams are accepted at once; a stream gets its first answers
// when a state exists (istiod waits, unsynced, rather than hearing "nothing" and deleting
// what it holds).
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	gopts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(1024),
		grpc.MaxRecvMsgSize(4 << 20),
	}
	if s.opts.ServerTLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.opts.ServerTLS)))
	}
	gs := grpc.NewServer(gopts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, (*adsServer)(s))
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(s.ln) }()
	s.log.Info("istio MCP config source serving", "addr", s.Addr(), "tls", s.opts.ServerTLS != nil)
	select {
	case <-ctx.Done():
		gs.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("istio mcp serve: %w", err)
	}
}

type adsServer Server

func (a *adsServer) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return (*Server)(a).stream(stream)
}

func (a *adsServer) DeltaAggregatedResources(discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return errDeltaUnsupported
}

// maxUnknownTypes bounds the distinct unknown type URLs remembered and counted; the rest are
// counted as unknownOther.
const maxUnknownTypes = 64

const unknownOther = "(other)"

var errDeltaUnsupported = status.Error(codes.Unimplemented, "istio mcp: delta xDS is not served; istiod's config source uses state of the world")

// statusChangedLocked wakes the StatusChanged waiters (s.mu held).
func (s *Server) statusChangedLocked() {
	close(s.statusCh)
	s.statusCh = make(chan struct{})
}

func (s *Server) statusChanged() {
	s.mu.Lock()
	s.statusChangedLocked()
	s.mu.Unlock()
}

// StatusChanged is closed at the next change of what Report returns (an istiod connecting
// or leaving, an ACK, a NACK, a push, a relay's report, a new state).
func (s *Server) StatusChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusCh
}

// conn is one istiod's stream (or a `meshfed istio source` relay's: then report holds what
// the relay says about the istiods behind it).
type conn struct {
	id        int64
	node      string
	peer      string
	connected time.Time
	relay     bool
	report    *Report
	ctx       context.Context // the stream's: ends the roots probe with it

	mu    sync.Mutex
	types map[string]*typeConn
	roots *Roots // the roots probe's view (nil: no probe)
}

func (c *conn) nodeID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

type typeConn struct {
	sentVersion, sentNonce string
	ackedVersion           string
	nack                   string // error of the last NACK, "" after an ACK
	lastPush, lastAck      time.Time
}

func (s *Server) stream(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	c := &conn{connected: time.Now(), types: map[string]*typeConn{}, ctx: stream.Context()}
	if p, ok := peer.FromContext(stream.Context()); ok {
		c.peer = p.Addr.String()
	}
	s.mu.Lock()
	s.nextID++
	c.id = s.nextID
	s.conns[c.id] = c
	s.statusChangedLocked()
	s.mu.Unlock()
	s.m.streams.Inc()
	defer func() {
		s.m.streams.Dec()
		s.mu.Lock()
		delete(s.conns, c.id)
		s.statusChangedLocked()
		s.mu.Unlock()
		s.log.Info("istiod disconnected", "node", c.node, "peer", c.peer)
	}()

	reqs := make(chan *discoveryv3.DiscoveryRequest, 16)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-stream.Context().Done():
				return
			}
		}
	}()

	for {
		s.mu.Lock()
		st, ch := s.state, s.changed
		s.mu.Unlock()
		// Push every subscribed type whose version moved (nothing before the first state).
		if st != nil {
			for _, t := range c.subscribed() {
				if err := s.maybeSend(stream, c, st, t); err != nil {
					return err
				}
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || isEOF(err) {
				return nil
			}
			return err
		case <-ch:
		case r := <-reqs:
			s.onRequest(c, r)
		}
	}
}

func (c *conn) subscribed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.types))
	for t := range c.types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (s *Server) onRequest(c *conn, r *discoveryv3.DiscoveryRequest) {
	t := r.GetTypeUrl()
	if n := r.GetNode(); n != nil {
		s.onNode(c, n)
	}
	if t == "" {
		return
	}
	c.mu.Lock()
	tc := c.types[t]
	first := tc == nil
	if first {
		tc = &typeConn{}
		c.types[t] = tc
		// What the client says it has: a reconnecting client holding the current version
		// is not sent it again.
		tc.sentVersion = r.GetVersionInfo()
	}
	if !first && r.GetResponseNonce() != "" && r.GetResponseNonce() == tc.sentNonce {
		if d := r.GetErrorDetail(); d != nil {
			tc.nack = d.GetMessage()
			c.mu.Unlock()
			s.onNACK(c, t, d.GetCode(), d.GetMessage())
			return
		}
		tc.ackedVersion, tc.nack, tc.lastAck = r.GetVersionInfo(), "", time.Now()
	}
	c.mu.Unlock()
	s.statusChanged()
	if first && !known(t) {
		s.mu.Lock()
		seen := s.unknown[t]
		if !seen && len(s.unknown) >= maxUnknownTypes {
			// The listener takes any client: bound what one can make us remember.
			t, seen = unknownOther, s.unknown[unknownOther]
		}
		s.unknown[t] = true
		s.statusChangedLocked()
		s.mu.Unlock()
		s.m.unknownTypes.WithLabelValues(t).Inc()
		if !seen {
			s.log.Warn("istiod asked for a type this meshfed does not know; answering with an empty state (istiod newer or older than the tested one?)",
				"type", t, "node", c.node)
		}
	}
}

// onNACK logs a NACK once per type and reason (the code's name), counts it, and keeps
// serving: the state is not resent until it changes.
func (s *Server) onNACK(c *conn, t string, code int32, msg string) {
	reason := codes.Code(code).String()
	if code < 0 || code > int32(codes.Unauthenticated) {
		reason = "Unknown" // not a gRPC code: keep the label set bounded
	}
	s.mu.Lock()
	if !known(t) && !s.unknown[t] {
		t = unknownOther // beyond the remembered unknown types: one label
	}
	s.mu.Unlock()
	s.m.nacks.WithLabelValues(t, reason).Inc()
	key := t + "\x00" + reason
	s.mu.Lock()
	seen := s.nackSeen[key]
	s.nackSeen[key] = true
	s.nacks[[2]string{t, reason}]++
	s.statusChangedLocked()
	s.mu.Unlock()
	if !seen {
		s.log.Error("istiod rejected (NACK) a state; it keeps its previous one", "type", t, "reason", reason, "error", msg, "node", c.node)
	}
}

func (s *Server) maybeSend(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, c *conn, st *State, t string) error {
	ts := st.Type(t)
	c.mu.Lock()
	tc := c.types[t]
	// sentVersion starts as what the client said it holds (a reconnecting client with the
	// current version is not sent it again); versions are never empty.
	if tc.sentVersion == ts.Version {
		c.mu.Unlock()
		return nil
	}
	nonce := strconv.FormatInt(s.nonce.Add(1), 36)
	tc.sentVersion, tc.sentNonce, tc.lastPush = ts.Version, nonce, time.Now()
	c.mu.Unlock()
	start := time.Now()
	s.statusChanged()
	err := stream.Send(&discoveryv3.DiscoveryResponse{TypeUrl: t, VersionInfo: ts.Version, Nonce: nonce, Resources: ts.Resources})
	if err != nil {
		return err
	}
	s.m.pushes.WithLabelValues(t).Inc()
	s.m.pushSeconds.Observe(time.Since(start).Seconds())
	if len(ts.Resources) > 0 {
		s.log.Debug("pushed", "type", t, "version", ts.Version, "resources", len(ts.Resources), "node", c.node)
	}
	return nil
}

// TypeStatus is one type's state on one istiod stream.
type TypeStatus struct {
	Type         string    `json:"type"`
	SentVersion  string    `json:"sentVersion"`
	AckedVersion string    `json:"ackedVersion,omitempty"`
	NACK         string    `json:"nack,omitempty"`
	LastPush     time.Time `json:"lastPush,omitzero"`
	LastAck      time.Time `json:"lastAck,omitzero"`
}

// ConnStatus is one connected istiod.
type ConnStatus struct {
	Node string `json:"node"`
	Peer string `json:"peer"`
	// Via is the `meshfed istio source` relay the istiod is connected to ("" when direct).
	Via string `json:"via,omitempty"`
	// Relay: the stream is a `meshfed istio source`, not an istiod.
	Relay     bool         `json:"relay,omitempty"`
	Connected time.Time    `json:"connected"`
	LastPush  time.Time    `json:"lastPush,omitzero"`
	LastAck   time.Time    `json:"lastAck,omitzero"`
	Synced    bool         `json:"synced"` // every type it asked for is ACKed at the current version
	NACKs     int          `json:"nacks"`  // types whose last answer was a NACK
	Types     []TypeStatus `json:"types"`
	// Roots are the roots this istiod gives its proxies (PCDS), as the server's probe last
	// received them (nil: no probe; see Options.IstiodXDS). A relay reports its istiods'.
	Roots *Roots `json:"roots,omitempty"`
}

// Status lists the streams connected to this server (istiods, and relays), for /debug.
func (s *Server) Status() []ConnStatus {
	s.mu.Lock()
	st := s.state
	conns := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ConnStatus, 0, len(conns))
	for _, c := range conns {
		c.mu.Lock()
		cs := ConnStatus{Node: c.node, Peer: c.peer, Relay: c.relay, Connected: c.connected, Synced: st != nil && len(c.types) > 0}
		if c.roots != nil {
			r := *c.roots
			r.Fingerprints = append([]string{}, r.Fingerprints...)
			cs.Roots = &r
		}
		for t, tc := range c.types {
			cs.Types = append(cs.Types, TypeStatus{Type: t, SentVersion: tc.sentVersion, AckedVersion: tc.ackedVersion, NACK: tc.nack, LastPush: tc.lastPush, LastAck: tc.lastAck})
			if tc.lastPush.After(cs.LastPush) {
				cs.LastPush = tc.lastPush
			}
			if tc.lastAck.After(cs.LastAck) {
				cs.LastAck = tc.lastAck
			}
			if tc.nack != "" {
				cs.NACKs++
			}
			if st == nil || tc.ackedVersion != st.Type(t).Version || tc.nack != "" {
				cs.Synced = false
			}
		}
		c.mu.Unlock()
		sort.Slice(cs.Types, func(i, j int) bool { return cs.Types[i].Type < cs.Types[j].Type })
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node+out[i].Peer < out[j].Node+out[j].Peer })
	return out
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled
}

// DebugHandler serves /debug/istio: the connected istiods and the served state's versions.
func (s *Server) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		st, at, disk := s.state, s.stateAt, s.fromDisk
		s.mu.Unlock()
		out := struct {
			StateAt  time.Time         `json:"stateAt,omitzero"`
			FromDisk bool              `json:"fromDisk"`
			Versions map[string]string `json:"versions"`
			Counts   map[string]int    `json:"counts"`
			Streams  []ConnStatus      `json:"streams"`
			Report   *Report           `json:"report"`
		}{StateAt: at, FromDisk: disk, Versions: map[string]string{}, Counts: map[string]int{}, Streams: s.Status(), Report: s.Report()}
		if st != nil {
			for t, ts := range st.types {
				out.Versions[t] = ts.Version
				out.Counts[t] = len(ts.Names)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
}
