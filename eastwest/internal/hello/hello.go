package hello

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
)

// TLS constants used by the parser (RFC 8446, RFC 6066, RFC 7301, draft-ietf-tls-esni).
const (
	recordTypeHandshake   = 22
	recordHeaderLen       = 5
	maxPlaintextRecordLen = 1 << 14 // RFC 8446 5.1: a TLSPlaintext fragment is at most 2^14
	handshakeHeaderLen    = 4
	typeClientHello       = 1

	extServerName = 0
	extALPN       = 16
	// ExtECH is the encrypted_client_hello extension (the outer hello carries it).
	ExtECH = 0xfe0d

	// DefaultMaxBytes caps the bytes read for one ClientHello (records and headers).
	DefaultMaxBytes = 16 << 10
)

// Errors, one per rejection reason, so the gateway can count them apart.
var (
	ErrNotTLS    = errors.New("not a TLS handshake record")
	ErrTooLarge  = errors.New("ClientHello larger than the limit")
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrIncomplete is returned by Assemble when more bytes are needed.
	ErrIncomplete = errors.New("incomplete ClientHello")
)

// ClientHello is what the gateway needs from a hello.
type ClientHello struct {
	// ServerName is the host_name of the server_name extension ("" when absent), as sent.
	ServerName string
	// ALPN lists the protocols offered, in order (nil when absent).
	ALPN []string
	// ECH is true when the encrypted_client_hello extension is present: ServerName is
	// then the outer (public) name.
	ECH bool
	// Extensions lists the extension types in the order sent.
	Extensions []uint16

	// Inline storage so that a typical hello parses with few allocations.
	extBuf  [24]uint16
	alpnBuf [4]string
}

// Assemble looks at data, the bytes read so far from the start of a connection, and
// returns the complete ClientHello handshake message (header included) once every record
// carrying it has arrived. consumed is the number of bytes of data the records span.
// It returns ErrIncomplete when more bytes are needed; any other error is final.
// scratch, if large enough, is used to join a message split across records; in the common
// one-record case msg aliases data and nothing is copied.
func Assemble(data []byte, maxBytes int, scratch []byte) (msg []byte, consumed int, err error) {
	a := Assembler{Max: maxBytes, joined: scratch[:0]}
	msg, err = a.Feed(data)
	return msg, a.off, err
}

// Assembler reassembles a ClientHello incrementally: each Feed resumes where the last one
// stopped, so a hello trickling in one byte per segment costs linear, not quadratic, work.
type Assembler struct {
	// Max caps the bytes the hello's records may span (DefaultMaxBytes when 0).
	Max int

	off     int    // bytes of data spanned by complete records
	records int    // complete records seen
	msgLen  int    // handshake message length with header, 0 until known
	single  []byte // the only fragment while records == 1
	joined  []byte // fragments joined once records > 1
}

// Feed takes data, every byte read so far (data only ever grows between calls), and
// returns the hello message once complete, ErrIncomplete, or a final error.
func (a *Assembler) Feed(data []byte) ([]byte, error) {
	maxBytes := a.Max
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if len(data) == 0 {
		return nil, ErrIncomplete
	}
	if data[0] != recordTypeHandshake {
		return nil, ErrNotTLS
	}
	for {
		off := a.off
		if len(data)-off < recordHeaderLen {
			if off == 0 && len(data) >= 2 && data[1] >= 0x10 {
				return nil, ErrNotTLS
			}
			return nil, incomplete(off+recordHeaderLen, maxBytes)
		}
		h := data[off : off+recordHeaderLen]
		if h[0] != recordTypeHandshake {
			// RFC 8446 5.1: handshake messages MUST NOT be interleaved with other record types.
			return nil, fmt.Errorf("%w: record type %d inside the ClientHello", ErrMalformed, h[0])
		}
		if h[1] >= 0x10 {
			// crypto/tls's test for "does not look like TLS": a version of 16.0 or more.
			// Older versions are left for the backend to refuse.
			if off == 0 {
				return nil, ErrNotTLS
			}
			return nil, fmt.Errorf("%w: record version %d.%d", ErrMalformed, h[1], h[2])
		}
		rlen := int(h[3])<<8 | int(h[4])
		if rlen == 0 {
			return nil, fmt.Errorf("%w: empty handshake record", ErrMalformed)
		}
		if rlen > maxPlaintextRecordLen {
			return nil, fmt.Errorf("%w: record length %d over 2^14", ErrMalformed, rlen)
		}
		end := off + recordHeaderLen + rlen
		if end > maxBytes {
			return nil, ErrTooLarge
		}
		if end > len(data) {
			// Learn the message length early so an oversize hello is refused before
			// waiting for (or buffering) the rest of it.
			if a.records == 0 {
				if err := checkHeader(data[off+recordHeaderLen:], maxBytes); err != nil {
					return nil, err
				}
			}
			return nil, incomplete(end, maxBytes)
		}
		frag := data[off+recordHeaderLen : end]
		a.records++
		switch a.records {
		case 1:
			a.single = frag
		case 2:
			a.joined = append(append(a.joined, a.single...), frag...)
		default:
			a.joined = append(a.joined, frag...)
		}
		cur := a.single
		if a.records > 1 {
			cur = a.joined
		}
		a.off = end
		if a.msgLen == 0 && len(cur) >= handshakeHeaderLen {
			if err := checkHeader(cur, maxBytes); err != nil {
				return nil, err
			}
			a.msgLen = handshakeHeaderLen + (int(cur[1])<<16 | int(cur[2])<<8 | int(cur[3]))
		}
		if a.msgLen > 0 && len(cur) >= a.msgLen {
			// Bytes after the hello in its last record belong to a later handshake message
			// (crypto/tls keeps them too); they are replayed with the rest.
			return cur[:a.msgLen], nil
		}
	}
}

// checkHeader checks a handshake header at the start of cur, if it has arrived.
func checkHeader(cur []byte, maxBytes int) error {
	if len(cur) < handshakeHeaderLen {
		return nil
	}
	if cur[0] != typeClientHello {
		return fmt.Errorf("%w: handshake type %d, want client_hello", ErrMalformed, cur[0])
	}
	// The records needed carry at least the message plus one record header.
	msgLen := handshakeHeaderLen + (int(cur[1])<<16 | int(cur[2])<<8 | int(cur[3]))
	if msgLen+recordHeaderLen > maxBytes {
		return ErrTooLarge
	}
	return nil
}

func incomplete(need, maxBytes int) error {
	if need >= maxBytes {
		return ErrTooLarge
	}
	return ErrIncomplete
}

// Parse decodes a ClientHello handshake message (4-byte handshake header included), as
// Assemble returns it. It follows crypto/tls's own checks for the fields it reads, so that
// a hello Go's TLS server accepts is never refused here.
func Parse(msg []byte) (*ClientHello, error) {
	ch := new(ClientHello)
	if err := ParseInto(msg, ch); err != nil {
		return nil, err
	}
	return ch, nil
}

// ParseInto is Parse into a caller-owned value (reusing its Extensions and ALPN storage).
func ParseInto(msg []byte, ch *ClientHello) error {
	ch.ServerName, ch.ECH = "", false
	ch.Extensions, ch.ALPN = ch.extBuf[:0], ch.alpnBuf[:0]
	s := cryptobyte.String(msg)
	var (
		typ         uint8
		body        cryptobyte.String
		version     uint16
		sessionID   cryptobyte.String
		suites      cryptobyte.String
		compression cryptobyte.String
	)
	if !s.ReadUint8(&typ) || typ != typeClientHello || !s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return fmt.Errorf("%w: bad handshake header", ErrMalformed)
	}
	if !body.ReadUint16(&version) || !body.Skip(32) ||
		!body.ReadUint8LengthPrefixed(&sessionID) ||
		!body.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!body.ReadUint8LengthPrefixed(&compression) {
		return fmt.Errorf("%w: bad fixed fields", ErrMalformed)
	}
	if body.Empty() {
		// No extensions at all (TLS 1.2 and older clients may do that).
		ch.ALPN, ch.Extensions = nil, nil
		return nil
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return fmt.Errorf("%w: bad extensions block", ErrMalformed)
	}
	var seen [4]uint64 // bitset of low extension numbers, to find duplicates cheaply
	for !exts.Empty() {
		var (
			ext  uint16
			data cryptobyte.String
		)
		if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
			return fmt.Errorf("%w: bad extension", ErrMalformed)
		}
		if dup(&seen, ch.Extensions, ext) {
			// crypto/tls refuses duplicate extensions (RFC 8446 4.2).
			return fmt.Errorf("%w: duplicate extension %d", ErrMalformed, ext)
		}
		ch.Extensions = append(ch.Extensions, ext)
		switch ext {
		case extServerName:
			if err := parseServerName(data, ch); err != nil {
				return err
			}
		case extALPN:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
				return fmt.Errorf("%w: bad ALPN extension", ErrMalformed)
			}
			for !list.Empty() {
				var p cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&p) || p.Empty() {
					return fmt.Errorf("%w: empty ALPN protocol", ErrMalformed)
				}
				ch.ALPN = append(ch.ALPN, string(p))
			}
		case ExtECH:
			ch.ECH = true
		}
	}
	if len(ch.ALPN) == 0 {
		ch.ALPN = nil
	}
	if len(ch.Extensions) == 0 {
		ch.Extensions = nil
	}
	return nil
}

func dup(seen *[4]uint64, list []uint16, ext uint16) bool {
	if ext < 256 {
		bit := uint64(1) << (ext % 64)
		if seen[ext/64]&bit != 0 {
			return true
		}
		seen[ext/64] |= bit
		return false
	}
	for _, e := range list {
		if e == ext {
			return true
		}
	}
	return false
}

func parseServerName(data cryptobyte.String, ch *ClientHello) error {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return fmt.Errorf("%w: bad server_name extension", ErrMalformed)
	}
	for !list.Empty() {
		var (
			nameType uint8
			name     cryptobyte.String
		)
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
			return fmt.Errorf("%w: bad server_name entry", ErrMalformed)
		}
		if nameType != 0 {
			continue
		}
		if ch.ServerName != "" {
			// RFC 6066 3: at most one name of each type.
			return fmt.Errorf("%w: two host_name entries", ErrMalformed)
		}
		if name[len(name)-1] == '.' {
			// RFC 6066 3: "The hostname is represented ... without a trailing dot."
			return fmt.Errorf("%w: server name ends in a dot", ErrMalformed)
		}
		ch.ServerName = string(name)
	}
	return nil
}

// Read reads a ClientHello from r into buf (whose capacity is the size limit) and returns
// the bytes read (all of them, to replay) and the parsed hello. A read error from r (for
// example a deadline) is returned wrapped; io.ErrUnexpectedEOF when the peer closed early.
func Read(r io.Reader, buf []byte, ch *ClientHello) (raw []byte, err error) {
	buf = buf[:cap(buf)]
	maxBytes := len(buf)
	a := Assembler{Max: maxBytes}
	n := 0
	for {
		m, rerr := r.Read(buf[n:])
		n += m
		if m > 0 {
			msg, aerr := a.Feed(buf[:n])
			switch {
			case aerr == nil:
				return buf[:n], ParseInto(msg, ch)
			case !errors.Is(aerr, ErrIncomplete):
				return buf[:n], aerr
			}
			if n == maxBytes {
				return buf[:n], ErrTooLarge
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				if n == 0 {
					return buf[:n], io.EOF
				}
				return buf[:n], io.ErrUnexpectedEOF
			}
			return buf[:n], rerr
		}
	}
}
