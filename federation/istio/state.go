package istio

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	mcp "istio.io/api/mcp/v1alpha1"

	"github.com/meshfed/meshfed/internal/atomicfile"
)

// TypeState is the full state of one type: every resource istiod should hold, sorted by
// name, and a version that depends on the content alone (the same state has the same
// version in every process and after every restart).
type TypeState struct {
	Version   string
	Names     []string
	Resources []*anypb.Any // Any(istio.mcp.v1alpha1.Resource), in Names order
}

// State is what the server serves: type URL → full state. A State is never modified after it
// is made; types it does not hold are served as empty.
type State struct {
	types map[string]*TypeState
}

// emptyVersion is the version of a type with no resources.
var emptyVersion = versionOf(nil)

func versionOf(parts [][]byte) string {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		l := len(p)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// NewState builds a State from resources by type (metadata.name "ns/name" unique per type).
func NewState(byType map[string][]*mcp.Resource) (*State, error) {
	s := &State{types: map[string]*TypeState{}}
	for t, rs := range byType {
		sorted := append([]*mcp.Resource(nil), rs...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetMetadata().GetName() < sorted[j].GetMetadata().GetName() })
		ts := &TypeState{}
		var parts [][]byte
		for i, r := range sorted {
			name := r.GetMetadata().GetName()
			if i > 0 && name == ts.Names[i-1] {
				return nil, fmt.Errorf("istio state: %s %s twice", t, name)
			}
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("istio state: %s %s: %w", t, name, err)
			}
			ts.Names = append(ts.Names, name)
			ts.Resources = append(ts.Resources, &anypb.Any{TypeUrl: "type.googleapis.com/istio.mcp.v1alpha1.Resource", Value: b})
			parts = append(parts, b)
		}
		ts.Version = versionOf(parts)
		s.types[t] = ts
	}
	return s, nil
}

// Type returns the full state of type t (empty when the state holds none of it).
func (s *State) Type(t string) *TypeState {
	if s != nil {
		if ts := s.types[t]; ts != nil {
			return ts
		}
	}
	return &TypeState{Version: emptyVersion}
}

// Types lists the types the state holds resources for (sorted).
func (s *State) Types() []string {
	var out []string
	if s == nil {
		return nil
	}
	for t, ts := range s.types {
		if len(ts.Names) > 0 {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Resources decodes the resources of type t (for tests, debug and status).
func (s *State) Resources(t string) ([]*mcp.Resource, error) {
	var out []*mcp.Resource
	for _, a := range s.Type(t).Resources {
		r := &mcp.Resource{}
		if err := proto.Unmarshal(a.GetValue(), r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// diskState is the on-disk form of a State (the last good state, served at start before any
// plan exists: see Server.LoadFile).
type diskState struct {
	Version int                 `json:"version"`
	SavedAt time.Time           `json:"savedAt"`
	Types   map[string][]string `json:"types"` // type → base64 of each marshalled Resource
}

// WriteFile saves the state atomically (temporary file, fsync, rename).
func (s *State) WriteFile(path string) error {
	d := diskState{Version: 1, SavedAt: time.Now().UTC(), Types: map[string][]string{}}
	for t, ts := range s.types {
		for _, a := range ts.Resources {
			d.Types[t] = append(d.Types[t], base64.StdEncoding.EncodeToString(a.GetValue()))
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("istio state file: %w", err)
	}
	return nil
}

// ReadStateFile loads a state saved by WriteFile; it also returns when it was saved.
func ReadStateFile(path string) (*State, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	var d diskState
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, time.Time{}, fmt.Errorf("istio state file %s: %w", path, err)
	}
	if d.Version != 1 {
		return nil, time.Time{}, fmt.Errorf("istio state file %s: version %d, want 1", path, d.Version)
	}
	byType := map[string][]*mcp.Resource{}
	for t, list := range d.Types {
		for i, e := range list {
			raw, err := base64.StdEncoding.DecodeString(e)
			if err != nil {
				return nil, time.Time{}, fmt.Errorf("istio state file %s: types[%s][%d]: %w", path, t, i, err)
			}
			r := &mcp.Resource{}
			if err := proto.Unmarshal(raw, r); err != nil {
				return nil, time.Time{}, fmt.Errorf("istio state file %s: types[%s][%d]: %w", path, t, i, err)
			}
			byType[t] = append(byType[t], r)
		}
	}
	s, err := NewState(byType)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("istio state file %s: %w", path, err)
	}
	return s, d.SavedAt, nil
}
