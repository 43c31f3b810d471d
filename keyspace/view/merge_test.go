package view

import (
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
)

func exp(cluster string, age int, typ string, ports ...records.Port) *ClusterExport {
	return &ClusterExport{Cluster: cluster, Export: &records.Export{
		Cluster: cluster, Namespace: "demo", Name: "echo", Type: typ, Ports: ports,
		ExportedAt: time.Unix(1000+int64(age), 0),
	}}
}

func port(name string, n int32, app string) records.Port {
	return records.Port{Name: name, Port: n, Protocol: "TCP", AppProtocol: app, TargetPort: n + 1000}
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name      string
		in        []*ClusterExport
		wantType  string
		wantPorts []int32
		conflicts map[string]string // cluster -> field substring
	}{
		{
			name:      "agree",
			in:        []*ClusterExport{exp("west", 2, records.TypeClusterSetIP, port("tls", 8443, "")), exp("north", 1, records.TypeClusterSetIP, port("tls", 8443, ""))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443},
		},
		{
			name:      "union of ports",
			in:        []*ClusterExport{exp("west", 1, records.TypeClusterSetIP, port("tls", 8443, "")), exp("north", 2, records.TypeClusterSetIP, port("grpc", 9443, "grpc"))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443, 9443},
		},
		{
			name:      "oldest wins the type",
			in:        []*ClusterExport{exp("west", 5, records.TypeHeadless, port("tls", 8443, "")), exp("north", 1, records.TypeClusterSetIP, port("tls", 8443, ""))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443},
			conflicts: map[string]string{"west": "type"},
		},
		{
			name:      "same port different definition",
			in:        []*ClusterExport{exp("west", 1, records.TypeClusterSetIP, port("tls", 8443, "")), exp("north", 2, records.TypeClusterSetIP, port("https", 8443, "https"))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443},
			conflicts: map[string]string{"north": "ports[8443]"},
		},
		{
			name:      "same name different number",
			in:        []*ClusterExport{exp("west", 1, records.TypeClusterSetIP, port("tls", 8443, "")), exp("north", 2, records.TypeClusterSetIP, port("tls", 9443, ""))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443},
			conflicts: map[string]string{"north": "ports[9443]"},
		},
		{
			name:      "tie broken by name",
			in:        []*ClusterExport{exp("west", 1, records.TypeHeadless, port("tls", 8443, "")), exp("east", 1, records.TypeClusterSetIP, port("tls", 8443, ""))},
			wantType:  records.TypeClusterSetIP,
			wantPorts: []int32{8443},
			conflicts: map[string]string{"west": "type"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Merge(tt.in)
			if s.Type != tt.wantType {
				t.Errorf("type = %s, want %s", s.Type, tt.wantType)
			}
			var got []int32
			for _, p := range s.Ports {
				got = append(got, p.Port)
				if p.TargetPort != 0 {
					t.Errorf("merged port %d keeps a target port; it is each exporter's own", p.Port)
				}
			}
			if len(got) != len(tt.wantPorts) {
				t.Fatalf("ports = %v, want %v", got, tt.wantPorts)
			}
			for i := range got {
				if got[i] != tt.wantPorts[i] {
					t.Fatalf("ports = %v, want %v", got, tt.wantPorts)
				}
			}
			if len(s.Conflicts) != len(tt.conflicts) {
				t.Fatalf("conflicts = %+v, want %v", s.Conflicts, tt.conflicts)
			}
			for _, c := range s.Conflicts {
				if f, ok := tt.conflicts[c.Cluster]; !ok || !strings.Contains(c.Field, f) {
					t.Errorf("unexpected conflict %+v", c)
				}
			}
			if len(s.Clusters) != len(tt.in) {
				t.Errorf("a conflicting exporter must stay in Clusters: %d of %d", len(s.Clusters), len(tt.in))
			}
		})
	}
}

// Merge keeps every cluster's export whole: the endpoints' service accounts stay with the
// cluster that exported them (they name identities of that cluster's trust domain), and
// differing accounts across clusters are no conflict.
func TestMergeKeepsServiceAccountsPerCluster(t *testing.T) {
	west := exp("west", 1, records.TypeClusterSetIP, port("tls", 8443, ""))
	west.Export.Endpoints = []records.Endpoint{{Address: "10.0.0.1", Ready: true, ServiceAccount: "echo"}, {Address: "10.0.0.2", Ready: true}}
	north := exp("north", 2, records.TypeClusterSetIP, port("tls", 8443, ""))
	north.Export.Endpoints = []records.Endpoint{{Address: "10.1.0.1", Ready: true, ServiceAccount: "echo-north"}}
	svc := Merge([]*ClusterExport{west, north})
	if len(svc.Conflicts) != 0 {
		t.Fatalf("conflicts %+v: service accounts are per cluster", svc.Conflicts)
	}
	for _, tc := range []struct {
		cluster, want string
		unknown       int
	}{{"west", "echo", 1}, {"north", "echo-north", 0}} {
		ce := svc.Exporter(tc.cluster)
		got, unknown := ce.Export.ServiceAccounts(nil)
		if strings.Join(got, ",") != tc.want || unknown != tc.unknown {
			t.Errorf("%s: accounts %v (%d unknown), want %s (%d)", tc.cluster, got, unknown, tc.want, tc.unknown)
		}
	}
}
