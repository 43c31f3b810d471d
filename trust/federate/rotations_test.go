package federate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
)

// TestRotationPhaseMetric: a running rotation job shows up as one series naming its phase
// and when it entered it (what the MeshfedTrustRotationStuck alert reads); the series
// follows the phase, and goes away when the job ends.
func TestRotationPhaseMetric(t *testing.T) {
	env := trusttest.NewEnv(t)
	reg := prometheus.NewRegistry()
	svc, err := federate.New(federate.Config{Cluster: "obs", Store: env.St, Log: trusttest.Quiet(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const name = "meshfed_trust_rotation_phase_entered_timestamp_seconds"
	series := func() string {
		var b strings.Builder
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					b.WriteString(l.GetName() + "=" + l.GetValue() + " ")
				}
				b.WriteString(time.Unix(int64(m.GetGauge().GetValue()), 0).UTC().Format(time.RFC3339) + ";")
			}
		}
		return b.String()
	}

	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	rec := &records.Rotation{
		TrustDomain: "a.example", ID: "r1", Phase: records.PhasePreflight,
		OldRoots: "old", NewRoot: "new", NewRootFingerprint: "sha256:" + strings.Repeat("ab", 32),
		Issuer: records.IssuerExternal, BaseSequence: 3, Holder: "job", StartedBy: "test",
		StartedAt: t0, UpdatedAt: t0,
		History: []records.Progress{{Phase: records.PhasePreflight, At: t0}},
	}
	key := env.St.KS.Rotation("a.example")
	rev, err := env.St.Create(ctx, key, rec)
	if err != nil {
		t.Fatal(err)
	}
	want := "phase=preflight trust_domain=a.example " + t0.Format(time.RFC3339) + ";"
	waitfor.Cond(t, 10*time.Second, func() bool { return series() == want }, "series %q (have %q)", want, series())

	// The next phase replaces the series (no stale phase left behind).
	rec.Phase, rec.BothSequence, rec.UpdatedAt = records.PhaseWaitAcksBoth, 4, t1
	rec.History = append(rec.History, records.Progress{Phase: records.PhaseWaitAcksBoth, At: t1})
	if rev, err = env.St.Update(ctx, key, rec, rev); err != nil {
		t.Fatal(err)
	}
	want = "phase=wait-acks-both trust_domain=a.example " + t1.Format(time.RFC3339) + ";"
	waitfor.Cond(t, 10*time.Second, func() bool { return series() == want }, "series %q (have %q)", want, series())

	// A finished job has no series.
	rec.Phase = records.PhaseAborted
	rec.AbortSequence = 5
	rec.History = append(rec.History, records.Progress{Phase: records.PhaseAborted, At: t1.Add(time.Minute)})
	if _, err = env.St.Update(ctx, key, rec, rev); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return testutil.CollectAndCount(reg, name) == 0 }, "series gone after the job ended (have %q)", series())
}
