package rotation_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
	"github.com/meshfed/meshfed/trust/rotation"
)

// syncBuf is a goroutine-safe progress sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fixture struct {
	env  *trusttest.Env
	a, b *trusttest.Cluster
}

// Dev CA SVID lifetimes (the drain wait of every rotation). X.509 validity has one-second
// resolution, so SVIDs that carry live traffic get a few seconds; jobs that issue none can
// drain in a fraction of a second.
const (
	trafficSVIDTTL = 3 * time.Second
	quickSVIDTTL   = 300 * time.Millisecond
)

func newFixture(t *testing.T, svidTTL time.Duration) *fixture {
	env := trusttest.NewEnv(t)
	f := &fixture{env: env,
		a: env.StartCluster("a", "a.example", trusttest.ClusterOptions{SVIDTTL: svidTTL}),
		b: env.StartCluster("b", "b.example", trusttest.ClusterOptions{SVIDTTL: svidTTL}),
	}
	waitfor.Cond(t, 20*time.Second, func() bool { return f.a.Has("b.example", 1) && f.b.Has("a.example", 1) && f.acked("a.example", 1) }, "federated")
	return f
}

func (f *fixture) acked(td string, seq uint64) bool {
	for _, c := range []string{"a", "b"} {
		it, err := store.Get[records.Ack](context.Background(), f.env.St, f.env.St.KS.Ack(c, td))
		if err != nil || it.Value.Sequence < seq {
			return false
		}
	}
	return true
}

func (f *fixture) cfg(out *syncBuf) rotation.Config {
	return rotation.Config{Store: f.env.St, TrustDomain: "a.example", DevCADir: f.a.DevDir, Out: out, Log: trusttest.Quiet(),
		Poll: 10 * time.Millisecond, GateTimeout: 30 * time.Second, MinValidity: time.Hour}
}

func newRoot(t *testing.T) (*x509.Certificate, crypto.Signer) {
	c, k, err := devca.NewRoot("a.example", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func (f *fixture) bundle(t *testing.T) *records.Bundle {
	it, err := store.Get[records.Bundle](context.Background(), f.env.St, f.env.St.KS.Bundle("a.example"))
	if err != nil {
		t.Fatal(err)
	}
	return it.Value
}

// history watches every write of bundles/a.example from now on.
type history struct {
	mu   sync.Mutex
	recs []*records.Bundle
}

func (f *fixture) watchBundle(t *testing.T) *history {
	h := &history{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r, err := f.env.Cli.Get(ctx, f.env.St.KS.Bundle("a.example"))
	if err != nil {
		t.Fatal(err)
	}
	wch := f.env.Cli.Watch(ctx, f.env.St.KS.Bundle("a.example"), clientv3.WithRev(r.Header.Revision+1))
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != mvccpb.PUT {
					continue
				}
				rec, err := records.Decode[records.Bundle](ev.Kv.Value)
				if err == nil {
					h.mu.Lock()
					h.recs = append(h.recs, rec)
					h.mu.Unlock()
				}
			}
		}
	}()
	return h
}

// check: every write either keeps sequence and digest (a lock change) or moves the
// sequence by exactly one with other content: no duplicate, no skipped sequence.
func (h *history) check(t *testing.T, from uint64, want []uint64) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	seq, digest := from, ""
	var seen []uint64
	for _, r := range h.recs {
		switch {
		case r.Sequence == seq && (digest == "" || r.Digest == digest):
		case r.Sequence == seq+1 && r.Digest != digest:
			seen = append(seen, r.Sequence)
		default:
			t.Fatalf("bundle write at sequence %d (digest %s) after %d (%s): duplicate or skipped sequence", r.Sequence, r.Digest, seq, digest)
		}
		seq, digest = r.Sequence, r.Digest
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("sequences published %v, want %v", seen, want)
	}
}

func (f *fixture) checkDone(t *testing.T, rot *records.Rotation, newRoot *x509.Certificate, base uint64) {
	t.Helper()
	if rot.Phase != records.PhaseDone || rot.BothSequence != base+1 || rot.NewSequence != base+2 {
		t.Fatalf("job ended %s with sequences %d/%d (base %d)", rot.Phase, rot.BothSequence, rot.NewSequence, base)
	}
	b := f.bundle(t)
	tb, err := trust.FromRecord(b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if b.Lock != nil || b.Sequence != base+2 || len(tb.X509Roots) != 1 || !tb.X509Roots[0].Equal(newRoot) {
		t.Fatalf("final bundle: seq %d lock %v roots %d", b.Sequence, b.Lock, len(tb.X509Roots))
	}
	ca := f.a.CA(t)
	iss, _ := ca.Issuer()
	roots, _ := ca.Roots()
	if !iss.Equal(newRoot) || len(roots) != 1 {
		t.Fatalf("dev CA: issuer new=%v, %d roots", iss.Equal(newRoot), len(roots))
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return f.acked("a.example", base+2) }, "every cluster acks the final sequence")
}

// TestRotationUnderLiveMTLS rotates a.example's root while a workload of b.example keeps
// opening mTLS connections to a workload of a.example and back: zero handshake failures.
func TestRotationUnderLiveMTLS(t *testing.T) {
	f := newFixture(t, trafficSVIDTTL)
	wa := trusttest.StartWorkload(t, f.a.CA(t), "spiffe://a.example/ns/default/sa/server")
	wb := trusttest.StartWorkload(t, f.b.CA(t), "spiffe://b.example/ns/default/sa/client")
	srvA := trusttest.Serve(t, wa, f.a.Bundles(), "b.example")
	srvB := trusttest.Serve(t, wb, f.b.Bundles(), "a.example")
	oldLeaf := wa.Leaf()

	var calls, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	traffic := func(w *trusttest.Workload, c *trusttest.Cluster, addr, td string) {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond) // pacing of a bounded load loop
		defer tick.Stop()
		for i := 0; i < 3000; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			calls.Add(1)
			if err := trusttest.Call(w, c.Bundles(), addr, td); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}
	}
	wg.Add(2)
	go traffic(wb, f.b, srvA.Addr, "a.example") // b → a: verifies a's rotating root
	go traffic(wa, f.a, srvB.Addr, "b.example") // a → b: a presents SVIDs of the rotating root
	waitfor.Cond(t, 10*time.Second, func() bool { return calls.Load() > 20 }, "traffic flows")

	out := &syncBuf{}
	nc, nk := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.NewCAKey = nc, nk
	base := f.bundle(t).Sequence
	h := f.watchBundle(t)
	rot, err := rotation.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("rotation: %v\n%s", err, out)
	}
	// Keep traffic going until the workloads use the new root's SVIDs for a while.
	n := calls.Load()
	waitfor.Cond(t, 10*time.Second, func() bool { return calls.Load() > n+40 }, "traffic after the rotation")
	close(stop)
	wg.Wait()
	f.checkDone(t, rot, nc, base)
	h.check(t, base, []uint64{base + 1, base + 2})
	if failures.Load() != 0 {
		t.Fatalf("%d of %d handshakes failed during the rotation; first: %v\n%s", failures.Load(), calls.Load(), firstErr.Load(), out)
	}
	if wa.Leaf().CheckSignatureFrom(nc) != nil || oldLeaf.CheckSignatureFrom(nc) == nil {
		t.Fatal("the workload did not move to an SVID of the new root")
	}
	t.Logf("%d mTLS handshakes, 0 failures, across the rotation", calls.Load())
	for _, want := range []string{"wait-acks-both", "switch-issuer", "drain", "wait-acks-new", "done"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
}

// TestKillAtEveryPhaseAndResume kills the job just before and just after every transition
// (failpoints) and resumes it: every run ends in the same final state, with the sequences
// base+1 and base+2 published exactly once each.
func TestKillAtEveryPhaseAndResume(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	steps := [][2]records.RotationPhase{
		{records.PhasePreflight, records.PhaseWaitAcksBoth},
		{records.PhaseWaitAcksBoth, records.PhaseSwitchIssuer},
		{records.PhaseSwitchIssuer, records.PhaseDrain},
		{records.PhaseDrain, records.PhaseWaitAcksNew},
		{records.PhaseWaitAcksNew, records.PhaseDone},
	}
	killed := errors.New("killed by failpoint")
	for _, step := range steps {
		for _, after := range []bool{false, true} {
			name := fmt.Sprintf("%s-to-%s/after=%v", step[0], step[1], after)
			t.Run(name, func(t *testing.T) {
				out := &syncBuf{}
				nc, nk := newRoot(t)
				base := f.bundle(t).Sequence
				h := f.watchBundle(t)
				cfg := f.cfg(out)
				cfg.NewCA, cfg.NewCAKey = nc, nk
				hook := func(from, to records.RotationPhase) error {
					if from == step[0] && to == step[1] {
						return killed
					}
					return nil
				}
				if after {
					cfg.Hooks.After = hook
				} else {
					cfg.Hooks.Before = hook
				}
				if _, err := rotation.Start(context.Background(), cfg); !errors.Is(err, killed) {
					t.Fatalf("want the failpoint, got %v\n%s", err, out)
				}
				// A new process resumes: no key, no hooks.
				rcfg := f.cfg(out)
				if step[0] == records.PhasePreflight && !after {
					rcfg.NewCAKey = nk // the dev CA got the root before the kill, but be explicit as an operator would
				}
				rot, err := rotation.Resume(context.Background(), rcfg)
				if err != nil {
					t.Fatalf("resume: %v\n%s", err, out)
				}
				f.checkDone(t, rot, nc, base)
				h.check(t, base, []uint64{base + 1, base + 2})
			})
		}
	}
}

// TestAbortIsForwardOnly aborts before and after the issuer switch: the old roots come back
// as a new sequence, issuance is back on the old root, and the lock is released.
func TestAbortIsForwardOnly(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	for _, at := range []records.RotationPhase{records.PhaseSwitchIssuer, records.PhaseWaitAcksNew} {
		t.Run(string(at), func(t *testing.T) {
			out := &syncBuf{}
			oldIssuer, _ := f.a.CA(t).Issuer()
			nc, nk := newRoot(t)
			base := f.bundle(t).Sequence
			h := f.watchBundle(t)
			cfg := f.cfg(out)
			cfg.NewCA, cfg.NewCAKey = nc, nk
			stopAt := errors.New("paused for abort")
			cfg.Hooks.Before = func(from, to records.RotationPhase) error {
				if to == at {
					return stopAt
				}
				return nil
			}
			if _, err := rotation.Start(context.Background(), cfg); !errors.Is(err, stopAt) {
				t.Fatalf("want pause, got %v", err)
			}
			rot, err := rotation.Abort(context.Background(), f.cfg(out))
			if err != nil {
				t.Fatalf("abort: %v\n%s", err, out)
			}
			if rot.Phase != records.PhaseAborted || rot.AbortSequence != base+2 {
				t.Fatalf("abort ended %s at %d", rot.Phase, rot.AbortSequence)
			}
			b := f.bundle(t)
			tb, _ := trust.FromRecord(b, time.Now())
			if b.Lock != nil || b.Sequence != base+2 || tb.HasRoot(trust.Fingerprint(nc)) {
				t.Fatalf("after abort: seq %d lock %v has-new %v", b.Sequence, b.Lock, tb.HasRoot(trust.Fingerprint(nc)))
			}
			iss, _ := f.a.CA(t).Issuer()
			if !iss.Equal(oldIssuer) {
				t.Fatal("issuance is not back on the old root")
			}
			h.check(t, base, []uint64{base + 1, base + 2})
			if at == records.PhaseWaitAcksNew && !strings.Contains(out.String(), "abort-drain") {
				t.Fatalf("an abort after the switch must drain the new root's SVIDs:\n%s", out)
			}
		})
	}
	// Past the removal of the old root, abort is refused.
	out := &syncBuf{}
	nc, nk := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.NewCAKey = nc, nk
	stopAt := errors.New("paused")
	cfg.Hooks.After = func(from, to records.RotationPhase) error {
		if to == records.PhaseWaitAcksNew {
			return stopAt
		}
		return nil
	}
	if _, err := rotation.Start(context.Background(), cfg); !errors.Is(err, stopAt) {
		t.Fatal(err)
	}
	if _, err := rotation.Abort(context.Background(), f.cfg(out)); !errors.Is(err, rotation.ErrNotAbortable) {
		t.Fatalf("abort after removal: %v", err)
	}
	if _, err := rotation.Resume(context.Background(), f.cfg(out)); err != nil {
		t.Fatal(err)
	}
}

// TestUnreachableClusterBlocksUntilExcluded: a member without a heartbeat blocks the gate and
// is named; an explicit exclusion is recorded and lets the job finish. One job per trust
// domain at a time.
func TestUnreachableClusterBlocksUntilExcluded(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	f.env.StartCluster("c", "c.example", trusttest.ClusterOptions{NoService: true})
	out := &syncBuf{}
	nc, nk := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.NewCAKey = nc, nk
	cfg.GateTimeout = 300 * time.Millisecond
	_, err := rotation.Start(context.Background(), cfg)
	if !errors.Is(err, rotation.ErrGateTimeout) || !strings.Contains(err.Error(), "c: UNREACHABLE") {
		t.Fatalf("want the gate blocked by c, got %v\n%s", err, out)
	}
	// The messages refer to Config fields and entry points; named as `meshfed trust rotate`
	// names them, they read as they did when they named its flags.
	asFlags := func(err error) string {
		flags := map[string]string{"GateTimeout": "--gate-timeout", "NewCA": "--new-ca", "Resume": "--resume", "Abort": "--abort"}
		return validate.RenameFields(err, func(f string) string { return flags[f] }).Error()
	}
	if got := asFlags(err); !strings.HasPrefix(got, "gate not passed before --gate-timeout: acks of sequence ") {
		t.Errorf("gate timeout as the command says it: %s", got)
	}
	// A second job for the same trust domain is refused.
	nc2, nk2 := newRoot(t)
	cfg2 := f.cfg(out)
	cfg2.NewCA, cfg2.NewCAKey = nc2, nk2
	if _, err := rotation.Start(context.Background(), cfg2); !errors.Is(err, rotation.ErrJobRunning) || !strings.HasSuffix(asFlags(err), "; use --resume or --abort") {
		t.Fatalf("second job: %v", err)
	}
	rcfg := f.cfg(out)
	rcfg.Exclude, rcfg.Actor = []string{"c"}, "ops@test"
	rot, err := rotation.Resume(context.Background(), rcfg)
	if err != nil {
		t.Fatalf("resume with exclusion: %v\n%s", err, out)
	}
	if rot.Phase != records.PhaseDone || !rot.IsExcluded("c") || rot.Excluded[0].By != "ops@test" {
		t.Fatalf("job %s, exclusions %+v", rot.Phase, rot.Excluded)
	}
}

// TestExternalIssuerPausesForConfirmation: without a dev CA key the job pauses at the
// issuer switch with instructions, and continues once the operator confirms.
func TestExternalIssuerPausesForConfirmation(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	out := &syncBuf{}
	nc, _ := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.DevCADir, cfg.SVIDLifetime = nc, "", 200*time.Millisecond
	done := make(chan error, 1)
	var rot *records.Rotation
	go func() {
		var err error
		rot, err = rotation.Start(context.Background(), cfg)
		done <- err
	}()
	waitfor.Cond(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "--confirm-issuer-switched") }, "job pauses with instructions")
	if _, err := rotation.ConfirmIssuer(context.Background(), f.cfg(out)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("job did not continue after confirmation:\n%s", out)
	}
	if rot.Phase != records.PhaseDone || rot.IssuerConfirmedBy == "" {
		t.Fatalf("job %s confirmed by %q", rot.Phase, rot.IssuerConfirmedBy)
	}
}
