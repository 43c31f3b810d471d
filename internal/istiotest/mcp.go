package istiotest

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// MCPClient is a bare ADS stream to an MCP server (meshfed's --istio-mcp-listen or
// `meshfed istio source`) that a test drives as istiod would: it sends requests, ACKs and
// NACKs itself and reads responses in order.
type MCPClient struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resp   chan *discoveryv3.DiscoveryResponse
}

// DialMCP opens the stream; it ends with the test.
func DialMCP(t testing.TB, addr string) *MCPClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &MCPClient{t: t, stream: st, resp: make(chan *discoveryv3.DiscoveryResponse, 64)}
	go func() {
		defer close(c.resp)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			c.resp <- r
		}
	}()
	return c
}

// Send sends one request (failing the test when the stream is gone).
func (c *MCPClient) Send(r *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(r); err != nil {
		c.t.Fatal(err)
	}
}

// Next returns the next response, failing the test after timeout.
func (c *MCPClient) Next(timeout time.Duration) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resp:
		if !ok {
			c.t.Fatal("MCP stream closed")
		}
		return r
	case <-time.After(timeout):
		c.t.Fatalf("no MCP response within %v", timeout)
	}
	return nil
}

// None asserts that nothing arrives for d (a negative check has to wait its window).
func (c *MCPClient) None(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resp:
		c.t.Fatalf("unexpected response %s version %s", r.GetTypeUrl(), r.GetVersionInfo())
	case <-time.After(d):
	}
}
