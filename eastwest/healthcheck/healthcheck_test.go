package healthcheck

import "testing"

func TestParse(t *testing.T) {
	for line, healthy := range map[string]bool{
		"ok cluster=east service_ports=2 ready_endpoints=3 open_connections=1": true,
		"ok":                         true,
		"draining cluster=east":      false,
		"not-ready cluster=east":     false,
		"okay cluster=east":          false,
		"":                           false,
		"OK cluster=east":            false,
		"ok cluster=east future=1 x": true,
	} {
		r := Parse(line)
		if r.Healthy != healthy {
			t.Errorf("%q: healthy %v", line, r.Healthy)
		}
	}
	if r := Parse("ok cluster=east service_ports=2"); r.Fields["cluster"] != "east" || r.Fields["service_ports"] != "2" || r.Status != "ok" {
		t.Errorf("fields: %+v", r)
	}
}
