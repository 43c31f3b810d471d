package records

import (
	"strings"
	"testing"
	"time"
)

func validRotation() *Rotation {
	return &Rotation{
		TrustDomain: "a.example", ID: "rot-1", Phase: PhaseWaitAcksBoth,
		OldRoots: "-----BEGIN CERTIFICATE-----\n", NewRoot: "-----BEGIN CERTIFICATE-----\n",
		NewRootFingerprint: "sha256:" + strings.Repeat("ab", 32), Issuer: IssuerExternal,
		SVIDLifetimeMillis: 3600000, BaseSequence: 4, BothSequence: 5,
		Excluded: []Exclusion{{Cluster: "c", By: "ops", At: time.Unix(1, 0)}},
		Holder:   "host/1", StartedBy: "ops", StartedAt: time.Unix(1, 0).UTC(),
	}
}

func TestRotationRoundTrip(t *testing.T) {
	r := validRotation()
	b, err := Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode[Rotation](b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != PhaseWaitAcksBoth || got.BothSequence != 5 || !got.IsExcluded("c") || got.IsExcluded("d") {
		t.Fatalf("round trip lost data: %+v", got)
	}
	if got.SVIDLifetime() != time.Hour {
		t.Fatalf("lifetime %v", got.SVIDLifetime())
	}
}

func TestRotationValidateNamesFields(t *testing.T) {
	r := validRotation()
	r.Phase = "sideways"
	r.Issuer = IssuerDev
	r.NewSequence = 9
	r.Excluded = append(r.Excluded, Exclusion{Cluster: "c"})
	err := r.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, field := range []string{"phase", "devCADir", "newSequence", "excluded[1].cluster", "excluded[1].by"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

func TestPhaseProperties(t *testing.T) {
	if !PhaseDrain.Abortable() || PhaseWaitAcksNew.Abortable() || PhaseDone.Abortable() {
		t.Fatal("abortable: only before the old root is removed")
	}
	if !PhaseDone.Terminal() || !PhaseAborted.Terminal() || PhaseAbortDrain.Terminal() {
		t.Fatal("terminal phases")
	}
}

func FuzzDecodeRotation(f *testing.F) {
	b, _ := Encode(validRotation())
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"phase":"done"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode[Rotation](data)
		if err != nil {
			return
		}
		// Whatever decodes must encode again (validation is the same both ways).
		if _, err := Encode(r); err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
	})
}
