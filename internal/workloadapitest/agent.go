package workloadapitest

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
)

// Agent is a running fake agent.
type Agent struct {
	// Path is the socket's path; Addr the Workload API address (unix://Path).
	Path, Addr string
	srv        *grpc.Server
}

type server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	resp *workloadpb.X509SVIDResponse
}

func (s *server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, st grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	if err := st.Send(s.resp); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

// Start serves resp on a unix socket at path until Close.
func Start(path string, resp *workloadpb.X509SVIDResponse) (*Agent, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	workloadpb.RegisterSpiffeWorkloadAPIServer(srv, &server{resp: resp})
	go func() { _ = srv.Serve(ln) }()
	return &Agent{Path: path, Addr: "unix://" + path, srv: srv}, nil
}

// Close stops the agent.
func (a *Agent) Close() { a.srv.Stop() }

// Response is the answer for one SVID: id, its certificate chain (leaf first) and key,
// the roots of its trust domain, and the roots of federated trust domains by name
// (e.g. "east.example").
func Response(id string, chain []*x509.Certificate, key crypto.Signer, roots []*x509.Certificate, federated map[string][]*x509.Certificate) (*workloadpb.X509SVIDResponse, error) {
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("SVID key: %w", err)
	}
	resp := &workloadpb.X509SVIDResponse{
		Svids:            []*workloadpb.X509SVID{{SpiffeId: id, X509Svid: der(chain), X509SvidKey: k, Bundle: der(roots)}},
		FederatedBundles: map[string][]byte{},
	}
	for td, rs := range federated {
		resp.FederatedBundles["spiffe://"+td] = der(rs)
	}
	return resp, nil
}

// der concatenates the certificates' DER, as the Workload API carries them.
func der(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
