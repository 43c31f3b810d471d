package healthwire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxLine bounds what a reader accepts (a real line is ~100 bytes).
const MaxLine = 512

// StreamALPN is the ALPN protocol of the stream mode (package doc).
const StreamALPN = "meshfed-health-stream/1"

// Ping is what a checker writes in stream mode to ask for one status line. A gateway
// reads up to MaxPing bytes up to a newline and ignores what the line says.
const (
	Ping    = "ping\n"
	MaxPing = 64
)

// Line is a parsed health line: `<word> key=value ...`, e.g.
// "ok cluster=west service_ports=3 ready_endpoints=7 open_connections=12".
type Line struct {
	Word   string
	Fields map[string]string
}

// ParseLine parses one status line (without or with its trailing newline). The first
// word is the status; the rest are key=value pairs (docs/eastwest.md), unknown keys and
// tokens that are not key=value ignored, so that a newer gateway never fails an older
// checker. Only non-printable bytes make the line bad.
func ParseLine(line string) (Line, error) {
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if len(line) > MaxLine {
		return Line{}, fmt.Errorf("status line is %d bytes, over %d", len(line), MaxLine)
	}
	toks := strings.Fields(line)
	if len(toks) == 0 {
		return Line{}, errors.New("empty status line")
	}
	st := Line{Word: toks[0]}
	if !printableToken(st.Word) {
		return Line{}, fmt.Errorf("status word %q is not printable ASCII", st.Word)
	}
	for _, t := range toks[1:] {
		if !printableToken(t) {
			return Line{}, fmt.Errorf("status field %q is not printable ASCII", t)
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			continue // not key=value: ignored, like unknown keys (only the status word decides)
		}
		if st.Fields == nil {
			st.Fields = make(map[string]string, len(toks)-1)
		}
		st.Fields[k] = v
	}
	return st, nil
}

func printableToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// ReadLine reads the status line from r: up to MaxLine bytes and a newline (a line cut by
// the gateway's close_notify without a newline is accepted).
func ReadLine(r io.Reader) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxLine+1), MaxLine+1)
	line, err := br.ReadString('\n')
	if err == nil {
		return line, nil
	}
	if errors.Is(err, io.EOF) && line != "" && len(line) <= MaxLine {
		return line, nil // close_notify right after an unterminated line
	}
	if len(line) > MaxLine {
		return "", fmt.Errorf("no newline in the first %d bytes", MaxLine)
	}
	return "", err
}

// ReadPing reads one ping line (stream mode) from br: at most MaxPing bytes up to a
// newline; the content is ignored.
func ReadPing(br *bufio.Reader) error {
	for n := 0; n < MaxPing; n++ {
		b, err := br.ReadByte()
		if err != nil {
			return err
		}
		if b == '\n' {
			return nil
		}
	}
	return fmt.Errorf("no newline in the first %d bytes of a ping", MaxPing)
}

// ReadStreamLine reads one status line (stream mode) from br without reading past it; br
// must buffer more than MaxLine bytes (bufio.NewReaderSize(conn, MaxLine+1)).
func ReadStreamLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("no newline in the first %d bytes", MaxLine)
	}
	if err != nil {
		return "", err
	}
	return string(line), nil
}
