package file

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/discovery"
)

// The file source passes every endpoint field through to the records, serviceAccount
// included (unknown stays unknown).
func TestSnapshotPassesServiceAccounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exports.yaml")
	if err := os.WriteFile(path, []byte(`
services:
  - name: echo
    namespace: demo
    ports: [{port: 8443}]
    endpoints:
      - {address: 10.0.0.2}
      - {address: 10.0.0.1, serviceAccount: echo, hbonePort: 15008}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan discovery.Snapshot, 1)
	done := make(chan error, 1)
	go func() {
		done <- (&Source{Cluster: "west", Path: path, Interval: time.Hour}).Run(ctx, func(s discovery.Snapshot) {
			select {
			case got <- s:
			default:
			}
		})
	}()
	var snap discovery.Snapshot
	select {
	case snap = <-got:
	case err := <-done:
		t.Fatalf("source ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(snap.Exports) != 1 {
		t.Fatalf("exports %+v", snap.Exports)
	}
	eps := snap.Exports[0].Endpoints
	if len(eps) != 2 || eps[0].Address != "10.0.0.1" || eps[0].ServiceAccount != "echo" || eps[0].HBONEPort != 15008 || eps[1].ServiceAccount != "" {
		t.Fatalf("endpoints %+v: 10.0.0.1 runs as echo, 10.0.0.2's account is unknown", eps)
	}
	// The same through Snapshot directly, from a parsed file.
	f, err := exports.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if e := Snapshot("west", f).Exports[0]; e.Endpoints[0].ServiceAccount != "echo" {
		t.Fatalf("Snapshot: %+v", e.Endpoints)
	}
}
