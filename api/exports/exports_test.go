package exports

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	f, err := Parse([]byte(`
services:
  - name: echo
    namespace: demo
    ports:
      - {name: tls, port: 8443, targetPort: 9443}
    endpoints:
      - {address: 127.0.1.2, zone: z2, ready: false}
      - {address: 127.0.1.1, zone: z1}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Services[0]
	if s.Ports[0].Target() != 9443 || s.Ports[0].Protocol != ProtocolTCP {
		t.Errorf("port = %+v", s.Ports[0])
	}
	if s.Endpoints[0].Address != "127.0.1.1" || !s.Endpoints[0].IsReady() || s.Endpoints[1].IsReady() {
		t.Errorf("endpoints = %+v (sorted, ready defaults to true)", s.Endpoints)
	}
	if s.ReadyEndpoints() != 1 {
		t.Errorf("ready = %d", s.ReadyEndpoints())
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, "empty"},
		{`services: [{name: Echo, namespace: demo, ports: [{port: 1}]}]`, "services[0].name"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 70000}]}]`, "services[0].ports[0].port"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1, target_port: 2}]}]`, "unknown field"},
		{`services: [{name: echo, namespace: demo, ports: []}]`, "services[0].ports"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: host.example}]}]`, "services[0].endpoints[0].address"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}]}, {name: echo, namespace: demo, ports: [{port: 2}]}]`, "listed twice"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}, {port: 2}]}]`, "required when a service has more than one port"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1, protocol: UDP}]}]`, "protocol"},
		{`services: [{name: echo, namespace: demo, ports: [{port: "x"}]}]`, "services.ports.port"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, hbonePort: 70000}]}]`, "services[0].endpoints[0].hbonePort: 70000 is not a port: use 1-65535"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, hbonePort: -1}]}]`, "leave it out when the endpoint takes no HBONE"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, hbone_port: 15008}]}]`, "hbonePort"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, serviceAccount: Echo}]}]`, `services[0].endpoints[0].serviceAccount: "Echo" is not a DNS name`},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, serviceAccount: "a/b"}]}]`, "or leave it out when unknown"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, serviceAccount: "-sa"}]}]`, "services[0].endpoints[0].serviceAccount"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2, serviceAccount: ` + strings.Repeat("a", 254) + `}]}]`, "services[0].endpoints[1].serviceAccount"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, service_account: echo}]}]`, "serviceAccount"},
		{`services: [{name: echo, namespace: demo, ports: [{port: 1}], endpoints: [{address: 10.0.0.1, serviceAccount: 7}]}]`, "services.endpoints.serviceAccount"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want an error mentioning %q", tt.in, err, tt.want)
		}
	}
}

func TestParseHBONEPort(t *testing.T) {
	f, err := Parse([]byte(`
services:
  - name: echo
    namespace: demo
    ports: [{port: 8443}]
    endpoints:
      - {address: 10.0.0.2}
      - {address: 10.0.0.1, hbonePort: 15008}
`))
	if err != nil {
		t.Fatal(err)
	}
	eps := f.Services[0].Endpoints
	if eps[0].HBONEPort != 15008 || !eps[0].HBONE() || eps[1].HBONE() {
		t.Errorf("endpoints = %+v: only 10.0.0.1 takes HBONE, at 15008", eps)
	}
}

func TestParseServiceAccount(t *testing.T) {
	for _, tc := range []struct {
		sa, want string
	}{
		{"echo", "echo"},
		{"echo-v2.prod", "echo-v2.prod"}, // a DNS-1123 subdomain, as Kubernetes allows
		{"", ""},                         // optional: unknown
	} {
		f, err := Parse([]byte(`services: [{name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 10.0.0.1, serviceAccount: "` + tc.sa + `"}, {address: 10.0.0.2}]}]`))
		if err != nil {
			t.Fatalf("%q: %v", tc.sa, err)
		}
		eps := f.Services[0].Endpoints
		if eps[0].ServiceAccount != tc.want || eps[1].ServiceAccount != "" {
			t.Errorf("%q: endpoints = %+v", tc.sa, eps)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`services: [{name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 10.0.0.1, serviceAccount: echo}, {address: 10.0.0.2, serviceAccount: echo-v2.prod}, {address: 10.0.0.3}]}]`))
	f.Add([]byte(`{"services":[{"name":"a","namespace":"b","ports":[{"port":1}],"endpoints":[{"address":"fd00::1","serviceAccount":"Bad_SA"}]}]}`))
	f.Add([]byte(`services: [{name: echo, namespace: demo, ports: [{port: 8443}], endpoints: [{address: 10.0.0.1, hbonePort: 15008}, {address: 10.0.0.2}]}]`))
	f.Add([]byte(`services: [{name: echo, namespace: demo, ports: [{name: tls, port: 8443, targetPort: 9443}], endpoints: [{address: 127.0.1.1, zone: z1, ready: true}]}]`))
	f.Add([]byte(`{"services":[{"name":"a","namespace":"b","ports":[{"port":1}]}]}`))
	f.Add([]byte("services: []"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must validate again unchanged (Parse normalizes and sorts).
		if err := file.Validate(); err != nil {
			t.Fatalf("parsed file does not validate: %v", err)
		}
	})
}

func TestWatcherFollowsRenamesAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "exports.yaml")
	write := func(content string) {
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(`services: [{name: a, namespace: demo, ports: [{port: 1}]}]`)
	var mu sync.Mutex
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Watcher{Path: path, Interval: 5 * time.Millisecond}
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(f *File, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got = append(got, "error")
				return
			}
			got = append(got, f.Services[0].Name)
		})
	}()
	wait := func(n int) []string {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			if len(got) >= n {
				g := append([]string(nil), got...)
				mu.Unlock()
				return g
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("got %v, want %d calls", got, n)
		return nil
	}
	wait(1)
	write(`services: [{name: BAD, namespace: demo, ports: [{port: 1}]}]`)
	wait(2)
	write(`services: [{name: b, namespace: demo, ports: [{port: 1}]}]`)
	g := wait(3)
	if g[0] != "a" || g[1] != "error" || g[2] != "b" {
		t.Fatalf("calls = %v, want [a error b]", g)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatcherFailsOnBadStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(path, []byte(`services: [{name: a}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := (&Watcher{Path: path}).Run(context.Background(), func(*File, error) { t.Error("fn called for a bad first load") })
	if err == nil || !strings.Contains(err.Error(), "services[0]") {
		t.Fatalf("err = %v", err)
	}
}
