package healthwire

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	good := map[string]Line{
		"ok\n":                          {Word: "ok"},
		"ok cluster=west ready=3\r\n":   {Word: "ok", Fields: map[string]string{"cluster": "west", "ready": "3"}},
		"draining cluster=west":         {Word: "draining", Fields: map[string]string{"cluster": "west"}},
		"not-ready   cluster=a  x=\n":   {Word: "not-ready", Fields: map[string]string{"cluster": "a", "x": ""}},
		"ok future_field=1 cluster=c\n": {Word: "ok", Fields: map[string]string{"future_field": "1", "cluster": "c"}},
		"ok cluster":                    {Word: "ok"},
		"ok =x free text a=b":           {Word: "ok", Fields: map[string]string{"a": "b"}},
	}
	for in, want := range good {
		got, err := ParseLine(in)
		if err != nil || got.Word != want.Word || len(got.Fields) != len(want.Fields) {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v", in, got, err, want)
			continue
		}
		for k, v := range want.Fields {
			if got.Fields[k] != v {
				t.Errorf("ParseLine(%q) field %s = %q, want %q", in, k, got.Fields[k], v)
			}
		}
	}
	for _, in := range []string{"", "\n", "   ", "ok\x00", strings.Repeat("a", MaxLine+1), "ok a=\x01", "\xffok"} {
		if got, err := ParseLine(in); err == nil {
			t.Errorf("ParseLine(%q) = %+v, want an error", in, got)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"ok cluster=west service_ports=3 ready_endpoints=7 open_connections=12\n",
		"draining cluster=west service_ports=0 ready_endpoints=0 open_connections=1\n",
		"not-ready cluster=x\n", "ok\n", "", "ok a", "ok =", "ok a==b\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLine(s)
		if err != nil {
			return
		}
		if l.Word == "" || !printableToken(l.Word) {
			t.Fatalf("accepted word %q", l.Word)
		}
		for k, v := range l.Fields {
			if k == "" || !printableToken(k) || !printableToken(v) {
				t.Fatalf("accepted field %q=%q", k, v)
			}
		}
		// Reformatting an accepted line parses to the same thing.
		var b strings.Builder
		b.WriteString(l.Word)
		for k, v := range l.Fields {
			b.WriteString(" " + k + "=" + v)
		}
		l2, err := ParseLine(b.String())
		if err != nil || l2.Word != l.Word || len(l2.Fields) != len(l.Fields) {
			t.Fatalf("round trip of %q: %+v %v", s, l2, err)
		}
	})
}

func TestReadPing(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(Ping + "anything\n" + strings.Repeat("x", MaxPing+1)))
	for i := 0; i < 2; i++ {
		if err := ReadPing(br); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	if err := ReadPing(br); err == nil {
		t.Fatal("a ping without a newline in MaxPing bytes was accepted")
	}
	if err := ReadPing(bufio.NewReader(strings.NewReader("pi"))); !errors.Is(err, io.EOF) {
		t.Fatalf("cut ping: %v, want EOF", err)
	}
}

func TestReadStreamLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("ok cluster=a\nok cluster=b\n"+strings.Repeat("x", MaxLine+1)+"\n"), MaxLine+1)
	for _, want := range []string{"ok cluster=a\n", "ok cluster=b\n"} {
		if got, err := ReadStreamLine(br); got != want || err != nil {
			t.Fatalf("ReadStreamLine = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := ReadStreamLine(br); err == nil {
		t.Fatal("a line over MaxLine was accepted")
	}
}
