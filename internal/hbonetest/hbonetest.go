package hbonetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
)

// ClientTLS is an HBONE client's TLS: the SVID it presents, TLS 1.3, ALPN h2, and the
// server's certificate verified as an SVID of Bundles (when ServerID is set, exactly that
// ID). No SNI is sent: HBONE peers are dialled by address.
func ClientTLS(cert *tls.Certificate, bundles x509bundle.Source, serverID string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		InsecureSkipVerify: true, //nolint:gosec // verified as an SVID below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil // send none
			}
			return cert, nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := x509svid.ParseAndVerify(raw, bundles)
			if err != nil {
				return err
			}
			if serverID != "" && id.String() != serverID {
				return fmt.Errorf("server is %s, want %s", id, serverID)
			}
			return nil
		},
	}
}

// Conn is one HTTP/2 connection to an HBONE server, over which streams are opened.
type Conn struct {
	TLS *tls.Conn
	cc  *http2.ClientConn
}

// DialConn opens mTLS + HTTP/2 to addr.
func DialConn(ctx context.Context, addr string, cfg *tls.Config) (*Conn, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewConn(c.(*tls.Conn))
}

// NewConn speaks HTTP/2 over an established TLS connection.
func NewConn(tc *tls.Conn) (*Conn, error) {
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, fmt.Errorf("ALPN %q, want h2", p)
	}
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		tc.Close()
		return nil, err
	}
	return &Conn{TLS: tc, cc: cc}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.cc.Close() }

// Do sends one request with method and authority and an open body; it returns the
// response (whatever its status) and, on 200, the stream.
func (c *Conn) Do(ctx context.Context, method, authority string) (*http.Response, *Stream, error) {
	pr, pw := io.Pipe()
	req := &http.Request{Method: method, Host: authority, URL: &url.URL{Host: authority}, Header: http.Header{},
		Body: pr, ContentLength: -1, Proto: "HTTP/2.0", ProtoMajor: 2}
	if method != http.MethodConnect {
		req.URL.Scheme, req.URL.Path = "https", "/"
		req.Body, req.ContentLength = http.NoBody, 0
		pw.Close()
	}
	req = req.WithContext(ctx)
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		return resp, nil, nil
	}
	return resp, &Stream{r: resp.Body, w: pw, local: c.TLS.LocalAddr(), remote: c.TLS.RemoteAddr()}, nil
}

// Connect opens a CONNECT stream to authority; a status other than 200 is an error
// carrying the status and the server's text.
func (c *Conn) Connect(ctx context.Context, authority string) (*Stream, error) {
	resp, s, err := c.Do(ctx, http.MethodConnect, authority)
	if err != nil {
		return nil, err
	}
	if s == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode, Text: string(b)}
	}
	return s, nil
}

// StatusError is a refused CONNECT.
type StatusError struct {
	Code int
	Text string
}

func (e *StatusError) Error() string { return fmt.Sprintf("CONNECT answered %d: %s", e.Code, e.Text) }

// Stream is a CONNECT stream as a net.Conn; CloseWrite ends the request (END_STREAM).
type Stream struct {
	r             io.ReadCloser
	w             *io.PipeWriter
	local, remote net.Addr
	once          sync.Once
}

func (s *Stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *Stream) Write(p []byte) (int, error) { return s.w.Write(p) }

// CloseWrite half-closes: the peer reads EOF, bytes still come back.
func (s *Stream) CloseWrite() error { return s.w.Close() }

// Close ends both directions.
func (s *Stream) Close() error {
	s.once.Do(func() { s.w.Close(); s.r.Close() })
	return nil
}
func (s *Stream) LocalAddr() net.Addr                { return s.local }
func (s *Stream) RemoteAddr() net.Addr               { return s.remote }
func (s *Stream) SetDeadline(t time.Time) error      { return nil }
func (s *Stream) SetReadDeadline(t time.Time) error  { return nil }
func (s *Stream) SetWriteDeadline(t time.Time) error { return nil }

// Dial is one HBONE tunnel: mTLS + HTTP/2 to addr, CONNECT authority.
func Dial(ctx context.Context, addr, authority string, cfg *tls.Config) (*Conn, *Stream, error) {
	c, err := DialConn(ctx, addr, cfg)
	return connect(ctx, c, err, authority)
}

// connect opens the CONNECT stream on c (closing c when that fails).
func connect(ctx context.Context, c *Conn, err error, authority string) (*Conn, *Stream, error) {
	if err != nil {
		return nil, nil, err
	}
	s, err := c.Connect(ctx, authority)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

// DialInner is the inner layer of double HBONE: mTLS + HTTP/2 over the outer stream (to
// the destination ztunnel, through the gateway), CONNECT authority.
func DialInner(ctx context.Context, outer net.Conn, authority string, cfg *tls.Config) (*Conn, *Stream, error) {
	tc := tls.Client(outer, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("inner handshake: %w", err)
	}
	c, err := NewConn(tc)
	return connect(ctx, c, err, authority)
}

// PeerID is the SPIFFE ID of a TLS connection's peer.
func PeerID(tc *tls.Conn) (spiffeid.ID, error) {
	pc := tc.ConnectionState().PeerCertificates
	if len(pc) == 0 {
		return spiffeid.ID{}, errors.New("no peer certificate")
	}
	return x509svid.IDFromCert(pc[0])
}
