package healthprobe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/internal/peerchain"
)

// Result labels of one probe (metrics label "result").
const (
	ResultOK           = "ok"
	ResultTimeout      = "timeout"
	ResultRefused      = "refused"
	ResultReset        = "reset"
	ResultClosed       = "closed"
	ResultTLS          = "tls"
	ResultStatus       = "status" // the gateway answered, with a status other than ok
	ResultWrongCluster = "wrong_cluster"
	ResultBadLine      = "bad_line"
	ResultError        = "error"
)

// Outcome is one probe's result.
type Outcome struct {
	OK bool
	// Hard: the failure is definitive (refused, reset, an explicit not-ok status, another
	// cluster answering): the address goes hard-down at once.
	Hard   bool
	Result string          // one of the Result* labels
	Line   healthwire.Line // the parsed status line (Word, Fields), when one was read
	Text   string          // that line as received, without its newline
	Err    error
	RTT    time.Duration
}

// DefaultTimeout bounds a Probe whose ctx has no deadline.
const DefaultTimeout = 2 * time.Second

// Probe checks one gateway address of cluster: TCP connect, TLS with SNI
// health.meshfed.internal, read one line. cluster "" accepts an answer from any cluster.
// roots nil means the gateway's certificate is not verified (see the package doc and
// docs/xds.md: unauthenticated until trust bundles exist); otherwise its chain must
// verify against roots. The whole probe is bounded by ctx (DefaultTimeout when ctx has no
// deadline).
func Probe(ctx context.Context, cluster, addr string, roots *x509.CertPool) Outcome {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	out := probe(ctx, cluster, addr, roots)
	out.RTT = time.Since(start)
	return out
}

func probe(ctx context.Context, cluster, addr string, roots *x509.CertPool) Outcome {
	tc, out := Dial(ctx, addr, roots, false)
	if tc == nil {
		return out
	}
	defer tc.Close()
	return ReadStatus(ctx, tc, cluster, addr)
}

// Dial connects to addr and completes the TLS handshake of the health name, offering the
// stream mode when stream is set (the caller checks NegotiatedProtocol). On failure the
// connection is nil and the outcome says why. The connection's deadline is ctx's, and it
// is cut when ctx ends; the caller clears both for a stream.
func Dial(ctx context.Context, addr string, roots *x509.CertPool, stream bool) (*tls.Conn, Outcome) {
	cfg := &tls.Config{ServerName: names.HealthSNI, MinVersion: tls.VersionTLS12}
	if stream {
		cfg.NextProtos = []string{healthwire.StreamALPN}
	}
	if roots == nil {
		// Unauthenticated until the trust component supplies this cluster's bundle: the
		// line carries no secret, and the check's job is liveness (documented).
		cfg.InsecureSkipVerify = true //nolint:gosec // see comment
	} else {
		cfg.InsecureSkipVerify = true //nolint:gosec // verified below, without a host name
		cfg.VerifyPeerCertificate = peerchain.Verify(roots)
	}
	return dialTLS(ctx, addr, cfg)
}

// dialTLS connects to addr and completes a TLS handshake with cfg. On failure the
// connection is nil and the outcome says why. The connection's deadline is ctx's, and it is
// cut when ctx ends.
func dialTLS(ctx context.Context, addr string, cfg *tls.Config) (*tls.Conn, Outcome) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, Classify(ctx, fmt.Errorf("connect %s: %w", addr, err))
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	// Closing the conn when ctx ends unblocks reads that a deadline alone would not
	// (a caller cancelling the probe).
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		out := Classify(ctx, fmt.Errorf("tls handshake with %s: %w", addr, err))
		if out.Result == ResultError {
			out.Result = ResultTLS // not a network error: the handshake itself failed
		}
		return nil, out
	}
	return tc, Outcome{}
}

// ReadStatus reads and judges one status line.
func ReadStatus(ctx context.Context, r io.Reader, cluster, addr string) Outcome {
	line, err := healthwire.ReadLine(r)
	if err != nil {
		return Classify(ctx, fmt.Errorf("read status line from %s: %w", addr, err))
	}
	return Judge(line, cluster, addr)
}

// Judge sorts a status line: ok, another cluster answering, or a status other than ok.
// cluster "" accepts any cluster.
func Judge(line, cluster, addr string) Outcome {
	text := strings.TrimRight(line, "\r\n")
	st, err := healthwire.ParseLine(line)
	if err != nil {
		return Outcome{Result: ResultBadLine, Text: text, Err: fmt.Errorf("%s: %w", addr, err)}
	}
	if c, ok := st.Fields["cluster"]; ok && cluster != "" && c != cluster {
		return Outcome{Hard: true, Result: ResultWrongCluster, Line: st, Text: text,
			Err: fmt.Errorf("%s answers as cluster %q, not %q: check clusters/%s gateways", addr, c, cluster, cluster)}
	}
	if st.Word != "ok" {
		return Outcome{Hard: true, Result: ResultStatus, Line: st, Text: text, Err: fmt.Errorf("%s says %q", addr, st.Word)}
	}
	return Outcome{OK: true, Result: ResultOK, Line: st, Text: text}
}

// Classify sorts a failure: refused and reset are definitive (hard), the rest counts
// towards a checker's fall threshold.
func Classify(ctx context.Context, err error) Outcome {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Outcome{Hard: true, Result: ResultRefused, Err: err}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Outcome{Hard: true, Result: ResultReset, Err: err}
	case ctx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return Outcome{Result: ResultTimeout, Err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Outcome{Result: ResultClosed, Err: err}
	}
	var ae tls.AlertError
	var ce *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	if errors.As(err, &ae) || errors.As(err, &ce) || errors.As(err, &rh) || strings.Contains(err.Error(), "tls:") {
		return Outcome{Result: ResultTLS, Err: err}
	}
	return Outcome{Result: ResultError, Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
