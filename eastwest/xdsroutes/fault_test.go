package xdsroutes_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/internal/waitfor"
)

func withFaultMetadata(t *testing.T, f *fault.Fault) *corev3.Metadata {
	t.Helper()
	s, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{fault.MetadataKey: s}}
}

// TestFaultFromXDS: a fault in the inbound clusters' metadata is carried out by the
// gateway; removing it lifts it; and with the federation gone, the gateway lifts the
// fault at its deadline by its own clock.
func TestFaultFromXDS(t *testing.T) {
	b1 := startBackend(t, "b1")
	cp := newControlPlane(t)
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)
	onlyFrom(t, g, echoSNI, "b1", 2)

	reset := &fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, ID: "d1", Deadline: time.Now().Add(time.Minute)}
	c := inboundCluster("demo", "echo", 8443)
	c.Metadata = withFaultMetadata(t, reset)
	m := cp.mark()
	cp.setCluster(c)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, true) }, "CDS with the fault ACKed")
	if _, err := call(g.addr, echoSNI); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("call during a reset fault: %v, want a reset", err)
	}
	if f := g.Faults(); len(f) != 1 || f[0] != reset.Normal() {
		t.Fatalf("faults in force: %v", f)
	}

	m = cp.mark()
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, true) }, "CDS without the fault ACKed")
	onlyFrom(t, g, echoSNI, "b1", 2)

	// A fault whose federation dies: it ends at its deadline all the same.
	deadline := time.Now().Add(2 * time.Second)
	short := &fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, ID: "d2", Deadline: deadline}
	c = inboundCluster("demo", "echo", 8443)
	c.Metadata = withFaultMetadata(t, short)
	m = cp.mark()
	cp.setCluster(c)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, true) }, "CDS with the short fault ACKed")
	cp.stop()
	if _, err := call(g.addr, echoSNI); !errors.Is(err, syscall.ECONNRESET) && time.Now().Before(deadline) {
		t.Fatalf("call during the short fault: %v, want a reset", err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { _, err := call(g.addr, echoSNI); return err == nil }, "calls pass after the deadline")
	if late := time.Since(deadline); late > 1500*time.Millisecond {
		t.Errorf("first call passed %v after the deadline; want within 1s (+ test polling)", late)
	}
	if f := g.Faults(); len(f) != 0 {
		t.Errorf("faults in force after the deadline: %v", f)
	}
}

// TestFaultMetadataRefused: a fault the gateway cannot read (no deadline) is NACKed and
// nothing changes.
func TestFaultMetadataRefused(t *testing.T) {
	b1 := startBackend(t, "b1")
	cp := newControlPlane(t)
	cp.setCLA(cla(echoName, ep{addr: b1.addr, health: healthy}))
	cp.setCluster(inboundCluster("demo", "echo", 8443))
	cp.start()
	g := newGateway(t, fastConfig(cp.addr))
	g.startSource(t, 10*time.Second)

	bad := &fault.Fault{Spec: fault.Spec{Kind: fault.Blackhole}, ID: "d1", Deadline: time.Now().Add(time.Minute)}
	c := inboundCluster("demo", "echo", 8443)
	c.Metadata = withFaultMetadata(t, bad)
	delete(c.Metadata.FilterMetadata[fault.MetadataKey].Fields, "deadline")
	m := cp.mark()
	cp.setCluster(c)
	waitfor.Cond(t, 10*time.Second, func() bool { return cp.answered(m, resourcev3.ClusterType, echoName, false) }, "CDS NACKed")
	if n := cp.nacks(resourcev3.ClusterType); len(n) == 0 || !strings.Contains(n[len(n)-1].GetErrorDetail().GetMessage(), "deadline") {
		t.Fatalf("NACK does not name the deadline: %v", n)
	}
	onlyFrom(t, g, echoSNI, "b1", 2)
}
