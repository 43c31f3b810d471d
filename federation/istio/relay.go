package istio

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	mcp "istio.io/api/mcp/v1alpha1"
)

// Relay copies the state of an upstream MCP server (a federation service's
// --istio-mcp-listen) into a local Server, which keeps it on disk (Options.StateFile). Run
// beside istiod (same pod), it is the config source istiod points at: istiod exits at start
// when its source is unreachable, and the relay answers from the last state on disk whether
// or not etcd, the federation replicas or any remote cluster are up.
type Relay struct {
	Upstream string
	// TLS, when set, dials the upstream with TLS (no client certificate: the upstream
	// serves read-only state).
	TLS *tls.Config
	// Node is the relay's node id toward the upstream (shown in its status).
	Node  string
	Local *Server
	Log   *slog.Logger
}

// Run follows the upstream until ctx ends, reconnecting with backoff; the local server
// keeps serving its last state meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "istio-relay", "upstream", r.Upstream)
	creds := insecure.NewCredentials()
	if r.TLS != nil {
		creds = credentials.NewTLS(r.TLS)
	}
	conn, err := grpc.NewClient(r.Upstream, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return fmt.Errorf("istio relay: %w", err)
	}
	defer conn.Close()
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := r.follow(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn), log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		log.Warn("upstream stream ended; serving the last state meanwhile", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (r *Relay) follow(ctx context.Context, cli discoveryv3.AggregatedDiscoveryServiceClient, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cli.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	// The node carries the local server's report (the istiods behind this relay), resent
	// whenever it changes, so the federation's status names them.
	sentReport := ""
	node := func() (*corev3.Node, error) {
		md, js, err := reportMetadata(r.Local.Report())
		if err != nil {
			return nil, err
		}
		if js == sentReport {
			return nil, nil
		}
		sentReport = js
		return &corev3.Node{Id: r.Node, Metadata: md}, nil
	}
	reportCh := r.Local.StatusChanged()
	n, err := node()
	if err != nil {
		return err
	}
	for i, t := range ProducedTypes {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: t}
		if i == 0 {
			req.Node = n
		}
		if err := stream.Send(req); err != nil {
			return err
		}
	}
	resps := make(chan *discoveryv3.DiscoveryResponse)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case resps <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	got := map[string][]*mcp.Resource{}
	for {
		var resp *discoveryv3.DiscoveryResponse
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case <-reportCh:
			reportCh = r.Local.StatusChanged()
			n, err := node()
			if err != nil {
				return err
			}
			if n != nil {
				if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: n}); err != nil {
					return err
				}
			}
			continue
		case resp = <-resps:
		}
		var rs []*mcp.Resource
		var bad error
		for _, a := range resp.GetResources() {
			m := &mcp.Resource{}
			if err := proto.Unmarshal(a.GetValue(), m); err != nil {
				bad = err
				break
			}
			rs = append(rs, m)
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if bad != nil {
			// Keep the last state of the type; tell the upstream.
			log.Error("upstream sent a resource that does not decode; keeping the last state of its type", "type", resp.GetTypeUrl(), "err", bad)
			ack.ErrorDetail = statusProto(bad)
			if err := stream.Send(ack); err != nil {
				return err
			}
			continue
		}
		got[resp.GetTypeUrl()] = rs
		if err := stream.Send(ack); err != nil {
			return err
		}
		if len(got) < len(ProducedTypes) {
			continue // a first full state of every type before publishing anything
		}
		st, err := NewState(got)
		if err != nil {
			log.Error("upstream state rejected", "err", err)
			continue
		}
		r.Local.SetState(st)
	}
}

func statusProto(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}
