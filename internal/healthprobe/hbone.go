package healthprobe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// hboneALPN is the only application protocol of an HBONE listener (eastwest.ALPNH2, not
// imported: the operator side does not link the data plane).
const hboneALPN = "h2"

// ProbeHBONE checks one address of a gateway's HBONE listener (meshfed gateway
// --hbone-listen) as far as a caller without an SVID can: TCP connect; TLS 1.3 offering ALPN
// h2 only and no SNI (ztunnels dial the gateway by address); the listener must choose h2
// and present an X.509 SVID, of trustDomain when that is not empty; and it must then refuse
// the connection for want of a client certificate, as meshfed's HBONE listener does (in TLS
// 1.3 the client's side of the handshake ends first, so the refusal is the first thing
// read). The chain is not verified (a joining cluster has no roots yet): the probe says that
// the listener is there and whose SVID it presents, not that the SVID is genuine. Bounded
// by ctx (DefaultTimeout when ctx has no deadline).
func ProbeHBONE(ctx context.Context, addr, trustDomain string) Outcome {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	out := probeHBONE(ctx, addr, trustDomain)
	out.RTT = time.Since(start)
	return out
}

func probeHBONE(ctx context.Context, addr, trustDomain string) Outcome {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{hboneALPN},
		// Identity is checked below as an SVID's trust domain; there are no roots to verify
		// the chain against at join time (see ProbeHBONE).
		InsecureSkipVerify: true, //nolint:gosec // see comment
	}
	tc, out := dialTLS(ctx, addr, cfg)
	if tc == nil {
		return out
	}
	defer tc.Close()
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != hboneALPN {
		return Outcome{Result: ResultTLS, Err: fmt.Errorf("%s answers TLS without ALPN h2 (got %q): not an HBONE listener (is this the SNI port?)", addr, cs.NegotiatedProtocol)}
	}
	if len(cs.PeerCertificates) == 0 {
		return Outcome{Result: ResultTLS, Err: fmt.Errorf("%s presented no certificate", addr)}
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return Outcome{Result: ResultTLS, Err: fmt.Errorf("%s presents no SVID (%v): an HBONE listener presents the gateway's SPIFFE ID", addr, err)}
	}
	if trustDomain != "" && id.TrustDomain().Name() != trustDomain {
		return Outcome{Hard: true, Result: ResultWrongCluster,
			Err: fmt.Errorf("%s presents %s, not an SVID of trust domain %s", addr, id, trustDomain)}
	}
	_, err = tc.Read(make([]byte, 1))
	switch {
	case err != nil && strings.Contains(err.Error(), "certificate required"):
		return Outcome{OK: true, Result: ResultOK}
	case err == nil, errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return Outcome{Result: ResultTLS, Err: fmt.Errorf("%s (%s) took a caller without a client certificate: meshfed's HBONE listener refuses one", addr, id)}
	}
	return Classify(ctx, fmt.Errorf("%s (%s): after the handshake: %w", addr, id, err))
}
