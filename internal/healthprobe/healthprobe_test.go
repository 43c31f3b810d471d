package healthprobe

import "testing"

// TestJudge: only "ok" as the first word is healthy; fields after it are read, unknown
// ones ignored (moved from eastwest/healthcheck's TestParse).
func TestJudge(t *testing.T) {
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
		r := Judge(line, "", "gw")
		if r.OK != healthy {
			t.Errorf("%q: healthy %v", line, r.OK)
		}
	}
	if r := Judge("ok cluster=east service_ports=2\n", "", "gw"); r.Line.Fields["cluster"] != "east" || r.Line.Fields["service_ports"] != "2" || r.Line.Word != "ok" || r.Text != "ok cluster=east service_ports=2" {
		t.Errorf("fields: %+v", r)
	}
	if r := Judge("ok cluster=west", "east", "gw"); r.OK || !r.Hard || r.Result != ResultWrongCluster {
		t.Errorf("another cluster answering: %+v", r)
	}
}
