package devup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers
)

// Call is one call of the demo client, one JSON line on its standard output.
type Call struct {
	At       time.Time `json:"at"`
	SPIFFEID string    `json:"spiffe_id,omitempty"`
	Peer     string    `json:"peer,omitempty"`     // the TCP peer: through a gateway, the gateway
	Workload string    `json:"workload,omitempty"` // the workload that answered (its own address)
	Millis   float64   `json:"ms"`
	Error    string    `json:"error,omitempty"`
}

// ClientEnv is the environment a proxyless grpc-go client of meshfed needs (grpc-go
// v1.85 reads it once at start): xDS SNI and SPIFFE bundle maps are still gated.
func ClientEnv(bootstrapFile string) []string {
	return []string{
		"GRPC_XDS_BOOTSTRAP=" + bootstrapFile,
		"GRPC_EXPERIMENTAL_XDS_SNI=true",
		"GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE=true",
	}
}

// MaxInFlight bounds the client's calls at once: a call starts every interval whether or
// not the previous ones have finished (a call into a blackholed gateway waits for its 2 s
// deadline), so that the timeline keeps its resolution during a failure.
const MaxInFlight = 64

// RunClient is the demo client (`meshfed dev call`): a plain grpc-go program that knows
// nothing of meshfed but its xDS bootstrap (GRPC_XDS_BOOTSTRAP). It starts a call of
// target every interval until ctx ends (at most MaxInFlight at once; a tick with that many
// in flight is skipped) and writes one Call per line to out, in the order they end.
func RunClient(ctx context.Context, target string, interval time.Duration, out io.Writer) error {
	if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" && os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		return errors.New("GRPC_XDS_BOOTSTRAP is not set: point it at the bootstrap file `meshfed dev up` wrote")
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("grpc client %s: %w", target, err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	enc := json.NewEncoder(out)
	var mu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, MaxInFlight)
	werr := make(chan error, 1)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case slots <- struct{}{}:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				c := call(ctx, hc)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if err := enc.Encode(c); err != nil {
					select {
					case werr <- err:
					default:
					}
				}
			}()
		default: // MaxInFlight calls hang: skip this tick
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-werr:
			return err
		case <-tick.C:
		}
	}
}

func call(ctx context.Context, hc healthpb.HealthClient) Call {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var p peer.Peer
	var md metadata.MD
	start := time.Now()
	_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.Header(&md), grpc.WaitForReady(false))
	c := Call{At: start, Millis: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		c.Error = err.Error()
		return c
	}
	if p.Addr != nil {
		c.Peer = p.Addr.String()
	}
	if v := md.Get(WorkloadAddrHeader); len(v) > 0 {
		c.Workload = v[0]
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
		c.SPIFFEID = ti.State.PeerCertificates[0].URIs[0].String()
	} else {
		c.Error = "answered without a TLS peer certificate: not mTLS"
	}
	return c
}
