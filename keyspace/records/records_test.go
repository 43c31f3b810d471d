package records

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	e := &Export{Cluster: "west", Namespace: "demo", Name: "echo", Type: TypeClusterSetIP, Revision: 3, ExportedAt: now, UpdatedAt: now,
		Ports:     []Port{{Name: "tls", Port: 8443, TargetPort: 9443, Protocol: "TCP"}},
		Endpoints: []Endpoint{{Address: "10.0.0.2", Ready: true, HBONEPort: 15008}, {Address: "10.0.0.1", Zone: "z1"}}}
	e.Canonicalize()
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"version":1`) {
		t.Fatalf("no version in %s", b)
	}
	got, err := Decode[Export](b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SameContent(e) || got.Endpoints[0].Address != "10.0.0.1" || got.Endpoints[1].HBONEPort != 15008 {
		t.Fatalf("round trip changed the record: %+v", got)
	}
	// The exports file shape carries the HBONE port both ways.
	svc := got.Service()
	if back := ExportFromService("west", &svc); back.Endpoints[1].HBONEPort != 15008 || back.Endpoints[0].HBONEPort != 0 {
		t.Fatalf("HBONE port lost through the exports shape: %+v", back.Endpoints)
	}
	changed := *got
	changed.Endpoints = append([]Endpoint(nil), got.Endpoints...)
	changed.Endpoints[0].HBONEPort = 15008
	if changed.SameContent(got) {
		t.Fatal("an HBONE port change is not a content change")
	}
}

// serviceAccount is optional and additive: a record written before it decodes (unknown
// account), one with it keeps it through encode, decode and the exports file shape, and a
// change of it is a content change (publishers skip only identical content).
func TestExportServiceAccount(t *testing.T) {
	old := `{"version":1,"cluster":"west","namespace":"demo","name":"echo","type":"ClusterSetIP","ports":[{"port":8443,"protocol":"TCP"}],` +
		`"endpoints":[{"address":"10.0.0.1","ready":true,"hbonePort":15008}],"revision":4,"exportedAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}`
	e, err := Decode[Export]([]byte(old))
	if err != nil {
		t.Fatalf("a record without serviceAccount: %v", err)
	}
	if e.Endpoints[0].ServiceAccount != "" || e.Endpoints[0].HBONEPort != 15008 {
		t.Fatalf("old record decoded as %+v", e.Endpoints)
	}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "serviceAccount") {
		t.Fatalf("an unknown account is written as a field: %s (old readers must see the same record)", b)
	}

	e.Endpoints = append(e.Endpoints, Endpoint{Address: "10.0.0.2", Ready: true, ServiceAccount: "echo-v2.prod"})
	b, err = Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[Export](b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Endpoints[0].ServiceAccount != "" || got.Endpoints[1].ServiceAccount != "echo-v2.prod" {
		t.Fatalf("round trip: %+v", got.Endpoints)
	}
	svc := got.Service()
	if back := ExportFromService("west", &svc); !back.SameContent(got) || back.Endpoints[1].ServiceAccount != "echo-v2.prod" {
		t.Fatalf("service account lost through the exports shape: %+v", back.Endpoints)
	}
	changed := *got
	changed.Endpoints = append([]Endpoint(nil), got.Endpoints...)
	changed.Endpoints[1].ServiceAccount = "echo"
	if changed.SameContent(got) {
		t.Fatal("a service account change is not a content change")
	}
	changed.Endpoints[1].ServiceAccount = "Echo_SA"
	if err := changed.Validate(); err == nil || !strings.Contains(err.Error(), "endpoints[1].serviceAccount:") {
		t.Fatalf("Validate = %v, want an error naming endpoints[1].serviceAccount", err)
	}
	// An old reader (one without the field) tolerates it: Decode ignores unknown fields,
	// shown here with a field this binary does not know either.
	if _, err := Decode[Export]([]byte(strings.Replace(old, `"hbonePort":15008`, `"hbonePort":15008,"futureIdentity":"x"`, 1))); err != nil {
		t.Fatal(err)
	}
}

func TestExportServiceAccounts(t *testing.T) {
	e := &Export{Endpoints: []Endpoint{
		{Address: "10.0.0.1", Ready: true, ServiceAccount: "echo"},
		{Address: "10.0.0.2", Ready: true, ServiceAccount: "canary"},
		{Address: "10.0.0.3", Ready: false, ServiceAccount: "old"},
		{Address: "10.0.0.4", Ready: true, ServiceAccount: "echo"},
		{Address: "10.0.0.5", Ready: false},
	}}
	ready := func(ep Endpoint) bool { return ep.Ready }
	for _, tc := range []struct {
		name    string
		include func(Endpoint) bool
		want    string
		unknown int
	}{
		{"all", nil, "canary,echo,old", 1},
		{"ready", ready, "canary,echo", 0},
		{"none", func(Endpoint) bool { return false }, "", 0},
	} {
		got, unknown := e.ServiceAccounts(tc.include)
		if strings.Join(got, ",") != tc.want || unknown != tc.unknown {
			t.Errorf("%s: %v, %d unknown; want %s, %d", tc.name, got, unknown, tc.want, tc.unknown)
		}
	}
}

func TestWorkloadID(t *testing.T) {
	owner := &Cluster{Name: "east", TrustDomain: "mesh.example"}
	sharer := &Cluster{Name: "west", TrustDomain: "mesh.example", SharesTrustDomainWith: "east"}
	own := &Cluster{Name: "north", TrustDomain: "north.example"}
	for _, tc := range []struct {
		c    *Cluster
		want string
	}{
		{owner, "spiffe://mesh.example/ns/demo/sa/echo"},
		{sharer, "spiffe://mesh.example/ns/demo/sa/echo"}, // the owner's trust domain
		{own, "spiffe://north.example/ns/demo/sa/echo"},
	} {
		if got := tc.c.WorkloadID("demo", "echo"); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.c.Name, got, tc.want)
		}
	}
}

func TestExportHBONEPortValidated(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	e := &Export{Cluster: "west", Namespace: "demo", Name: "echo", Type: TypeClusterSetIP, Revision: 1, ExportedAt: now,
		Ports:     []Port{{Port: 8443, Protocol: "TCP"}},
		Endpoints: []Endpoint{{Address: "10.0.0.1", Ready: true, HBONEPort: 70000}}}
	if err := e.Validate(); err == nil || !strings.Contains(err.Error(), "endpoints[0].hbonePort:") {
		t.Fatalf("Validate = %v, want an error naming endpoints[0].hbonePort", err)
	}
}

func TestDecodeToleratesUnknownFieldsRefusesNewerVersions(t *testing.T) {
	c := `{"version":1,"name":"west","network":"n","region":"r","zone":"z","trustDomain":"west.example","gateways":["1.2.3.4:15443"],"joinedAt":"2026-01-01T00:00:00Z","futureField":{"x":1}}`
	if _, err := Decode[Cluster]([]byte(c)); err != nil {
		t.Fatalf("unknown field refused: %v", err)
	}
	newer := strings.Replace(c, `"version":1`, `"version":2`, 1)
	if _, err := Decode[Cluster]([]byte(newer)); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("newer version: %v, want an error saying to upgrade", err)
	}
	if _, err := Decode[Cluster]([]byte(`{"name":"west"}`)); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("missing version: %v", err)
	}
}

func TestValidationNamesFields(t *testing.T) {
	tests := []struct {
		rec  Record
		want []string
	}{
		{&Cluster{Name: "West", Gateways: []string{"nohost"}}, []string{"name", "network", "region", "zone", "trustDomain", "gateways[0]", "joinedAt"}},
		{&Export{Cluster: "w", Namespace: "demo", Name: "echo", Type: "LoadBalancer", Ports: []Port{{Port: 0, Protocol: "TCP"}}}, []string{"type", "revision", "exportedAt", "ports[0].port"}},
		{&Drill{ID: "x", Cluster: "w", Namespace: "demo"}, []string{"service", "until", "startedBy"}},
		{&Policy{Namespace: "demo", Name: "echo", Order: []string{"a", "a"}}, []string{"order[1]"}},
		{&Bundle{TrustDomain: "td", Owner: "w", Sequence: 1, JWKS: json.RawMessage(`{`), Digest: "md5:x"}, []string{"jwks", "digest"}},
		{&Ack{Cluster: "w", TrustDomain: "td"}, []string{"sequence", "appliedAt"}},
		{&IstioStatus{Cluster: "w", Instance: "a.b", Istiods: []IstiodStatus{{}, {Node: "n", Roots: &IstiodRoots{Fingerprints: []string{"md5:x"}}}}},
			[]string{"instance", "updatedAt", "istiods[0].node", "istiods[1].roots.addr", "istiods[1].roots.fingerprints[0]"}},
		{&GatewayHealth{Cluster: "w", Instance: "a.b", Peers: []PeerHealth{{Cluster: "E", Gateways: []GatewayHealthState{{Addr: "x", State: "sick"}}}}},
			[]string{"instance", "updatedAt", "peers[0].cluster", "peers[0].gateways[0].addr", "peers[0].gateways[0].state"}},
		{&Alive{Cluster: "w"}, []string{"instance", "ttlSeconds"}},
		{&Audit{Action: "Join"}, []string{"time", "actor", "action"}},
	}
	for _, tt := range tests {
		err := tt.rec.Validate()
		if err == nil {
			t.Errorf("%T validated", tt.rec)
			continue
		}
		for _, f := range tt.want {
			if !strings.Contains(err.Error(), f+":") {
				t.Errorf("%T: error %q does not name field %s", tt.rec, err, f)
			}
		}
	}
}

func TestKeyspaceParse(t *testing.T) {
	ks := MustKeyspace("/m/")
	good := map[string]Key{
		ks.Cluster("west"):                {Kind: KindCluster, Cluster: "west"},
		ks.Alive("west"):                  {Kind: KindAlive, Cluster: "west"},
		ks.Export("west", "demo", "echo"): {Kind: KindExport, Cluster: "west", Namespace: "demo", Name: "echo"},
		ks.Bundle("west.example"):         {Kind: KindBundle, TrustDomain: "west.example"},
		ks.Ack("west", "east.example"):    {Kind: KindAck, Cluster: "west", TrustDomain: "east.example", Acks: AckBundles},
		ks.IstioAck("west", "fed-0-1"):    {Kind: KindAck, Cluster: "west", Name: "fed-0-1", Acks: AckIstio},
		ks.HealthAck("west", "fed-0-1"):   {Kind: KindAck, Cluster: "west", Name: "fed-0-1", Acks: AckHealth},
		ks.Drill("d-1"):                   {Kind: KindDrill, Name: "d-1"},
		ks.Rotation("west.example"):       {Kind: KindRotation, TrustDomain: "west.example"},
		ks.Policy("demo", "echo"):         {Kind: KindPolicy, Namespace: "demo", Name: "echo"},
	}
	for k, want := range good {
		got, err := ks.Parse(k)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", k, got, err, want)
		}
	}
	for _, k := range []string{"/m/exports/west/demo", "/m/exports/West/demo/echo", "/m/clusters/a/b", "/other/clusters/a", "/m/acks/w/x/td", "/m/acks/w/istio/a.b", "/m/acks/w/istio", "/m/acks/w/health/a.b", "/m/nope/x"} {
		if _, err := ks.Parse(k); err == nil {
			t.Errorf("Parse(%q) accepted", k)
		}
	}
	if _, err := NewKeyspace("meshfed"); err == nil {
		t.Error("relative prefix accepted")
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder of every record type: it must never
// panic, and whatever decodes must encode again and decode to the same value.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"version":1,"name":"west","network":"n","region":"r","zone":"z","trustDomain":"west.example","gateways":["1.2.3.4:15443"],"joinedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"cluster":"west","namespace":"demo","name":"echo","type":"ClusterSetIP","ports":[{"name":"tls","port":8443,"protocol":"TCP"}],"endpoints":[{"address":"10.0.0.1","ready":true,"hbonePort":15008}],"revision":1,"exportedAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"cluster":"west","namespace":"demo","name":"echo","type":"ClusterSetIP","ports":[{"port":8443,"protocol":"TCP"}],"endpoints":[{"address":"10.0.0.1","ready":true,"serviceAccount":"echo"},{"address":"10.0.0.2","ready":false,"serviceAccount":"Bad/SA"}],"revision":1,"exportedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"trustDomain":"west.example","owner":"west","sequence":2,"jwks":{"keys":[]},"digest":"sha256:` + strings.Repeat("0", 64) + `"}`,
		`{"version":1,"cluster":"west","trustDomain":"east.example","sequence":2,"digest":"x","appliedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"id":"d1","cluster":"west","until":"2026-01-01T00:00:00Z","startedBy":"me","startedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"namespace":"demo","name":"echo","order":["west","north"],"localFirst":false,"updatedAt":"2026-01-01T00:00:00Z"}`,
		`{"version":1,"cluster":"west","instance":"h/1","since":"2026-01-01T00:00:00Z","ttlSeconds":10}`,
		`{"version":1,"time":"2026-01-01T00:00:00Z","actor":"root","action":"join","cluster":"west"}`,
		`{"version":1,"cluster":"east","instance":"fed-1","updatedAt":"2026-01-01T00:00:00Z","peers":[{"cluster":"west","down":true,"since":"2026-01-01T00:00:00Z","gateways":[{"addr":"10.0.0.1:15443","state":"hard-down","since":"2026-01-01T00:00:00Z"}]}]}`,
		`{"version":2}`, `null`, `[]`, `{"version":1}{}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip[Cluster](t, data)
		roundTrip[Export](t, data)
		roundTrip[Bundle](t, data)
		roundTrip[Ack](t, data)
		roundTrip[IstioStatus](t, data)
		roundTrip[GatewayHealth](t, data)
		roundTrip[Drill](t, data)
		roundTrip[Policy](t, data)
		roundTrip[Alive](t, data)
		roundTrip[Audit](t, data)
	})
}

func roundTrip[T any, PT interface {
	*T
	Record
}](t *testing.T, data []byte) {
	v, err := Decode[T, PT](data)
	if err != nil {
		return
	}
	b, err := Encode(PT(v))
	if err != nil {
		t.Fatalf("%T decoded but does not encode: %v", v, err)
	}
	if _, err := Decode[T, PT](b); err != nil {
		t.Fatalf("%T re-decode: %v", v, err)
	}
}

func TestDrillFault(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	d := &Drill{ID: "d1", Cluster: "west", Until: now.Add(time.Minute), StartedBy: "op", StartedAt: now}
	if err := d.Validate(); err != nil || !d.Cordons() {
		t.Fatalf("an old drill (no fault) is a valid cordon: %v, cordons %v", err, d.Cordons())
	}
	d.Fault = "blackhole"
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "faultDeadline") {
		t.Fatalf("gateway fault without a deadline: %v", err)
	}
	d.FaultDeadline = now.Add(time.Minute)
	if err := d.Validate(); err != nil || d.Cordons() {
		t.Fatalf("blackhole drill: %v, cordons %v", err, d.Cordons())
	}
	if f, ok := d.GatewayFault(); !ok || f.Kind != "blackhole" || f.ID != "d1" || !f.Deadline.Equal(d.FaultDeadline) {
		t.Fatalf("gateway fault %v, %v", f, ok)
	}
	d.Fault = "drop"
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "fault") {
		t.Fatalf("unknown fault: %v", err)
	}
}

func TestClusterHBONEGateways(t *testing.T) {
	base := func() *Cluster {
		return &Cluster{Name: "west", Network: "net-west", Region: "r", Zone: "z", TrustDomain: "west.example",
			Gateways: []string{"192.0.2.1:15443"}, JoinedAt: time.Unix(1, 0)}
	}
	// Old records (no field) and old readers (unknown field) both keep working.
	old := `{"version":1,"name":"west","network":"n","region":"r","zone":"z","trustDomain":"west.example","gateways":["1.2.3.4:15443"],"joinedAt":"2026-01-01T00:00:00Z"}`
	c, err := Decode[Cluster]([]byte(old))
	if err != nil || c.HBONEGateways != nil || c.HBONEPort() != 0 {
		t.Fatalf("record without hboneGateways: %+v, %v", c, err)
	}
	ok := base()
	ok.HBONEGateways = []string{"192.0.2.1:15008", "[2001:db8::1]:15008", "gw.west.example:15008"}
	b, err := Encode(ok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"hboneGateways":["192.0.2.1:15008"`) {
		t.Errorf("encoded %s", b)
	}
	if back, err := Decode[Cluster](b); err != nil || !back.SameMember(ok) || back.HBONEPort() != 15008 {
		t.Errorf("round trip: %+v %v", back, err)
	}
	if base().SameMember(ok) {
		t.Error("SameMember ignores hboneGateways")
	}
	for _, tt := range []struct {
		gws  []string
		want string
	}{
		{[]string{"192.0.2.1"}, "hboneGateways[0]: "},
		{[]string{"192.0.2.1:15008", "192.0.2.1:15008"}, "hboneGateways[1]: 192.0.2.1:15008 is listed twice"},
		{[]string{"192.0.2.1:15008", "192.0.2.2:15009"}, "hboneGateways[1]: port 15009 differs from hboneGateways[0]'s 15008"},
	} {
		c := base()
		c.HBONEGateways = tt.gws
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.gws, err, tt.want)
		}
	}
}

func TestClusterSharesTrustDomain(t *testing.T) {
	mk := func(name, td, with string) *Cluster {
		return &Cluster{Name: name, Network: "net-" + name, Region: "r", Zone: "z", TrustDomain: td,
			Gateways: []string{"192.0.2.1:15443"}, SharesTrustDomainWith: with, JoinedAt: time.Unix(1, 0)}
	}
	west := mk("west", "mesh.example", "east")
	b, err := Encode(west)
	if err != nil || !strings.Contains(string(b), `"sharesTrustDomainWith":"east"`) {
		t.Fatalf("encode: %s %v", b, err)
	}
	back, err := Decode[Cluster](b)
	if err != nil || !back.SameMember(west) || back.BundleOwner() != "east" {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if mk("west", "mesh.example", "").SameMember(west) {
		t.Error("SameMember ignores sharesTrustDomainWith")
	}
	if o := mk("east", "mesh.example", "").BundleOwner(); o != "east" {
		t.Errorf("owner's BundleOwner = %q", o)
	}
	for with, want := range map[string]string{"west": "sharesTrustDomainWith: west names the cluster itself", "East": "sharesTrustDomainWith: "} {
		if err := mk("west", "mesh.example", with).Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sharesTrustDomainWith=%s: %v, want %q", with, err, want)
		}
	}

	set := func(cs ...*Cluster) map[string]*Cluster {
		m := map[string]*Cluster{}
		for _, c := range cs {
			m[c.Name] = c
		}
		return m
	}
	if p := CheckTrustDomains(set(mk("east", "mesh.example", ""), west, mk("north", "mesh.example", "east"), mk("south", "south.example", ""))); len(p) != 0 {
		t.Errorf("valid sharing: %v", p)
	}
	p := CheckTrustDomains(set(mk("east", "mesh.example", ""), mk("west", "mesh.example", ""), mk("north", "north.example", "east"),
		mk("south", "mesh.example", "gone"), mk("up", "mesh.example", "down"), mk("down", "mesh.example", "east")))
	for name, want := range map[string]string{
		"east":  "trust domain mesh.example is also owned by cluster west",
		"west":  "trust domain mesh.example is also owned by cluster east",
		"north": "has north.example and east has mesh.example",
		"south": "cluster gone, which is not a member",
		"up":    "which itself shares that of east: name the owner",
	} {
		if !strings.Contains(p[name], want) {
			t.Errorf("%s: %q, want %q", name, p[name], want)
		}
	}
	if _, bad := p["down"]; bad || len(p) != 5 {
		t.Errorf("problems: %v", p)
	}
}
