package istio

import (
	"encoding/json"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Report is what a server knows about the istiods it feeds: each one's ACK/NACK state and
// last push, the type URLs istiods asked for that this meshfed does not know (version
// skew), and NACK counts. A relay (`meshfed istio source`) forwards its own report
// upstream, so the federation's report names the istiods behind its relays too: that is
// what the federation publishes for `meshfed status`.
type Report struct {
	// Istiods are the istiods fed, directly (Via "") or through a relay (Via = its node).
	Istiods []ConnStatus `json:"istiods"`
	// Sources are the relays connected (their node ids).
	Sources      []string    `json:"sources,omitempty"`
	UnknownTypes []string    `json:"unknownTypes,omitempty"`
	NACKs        []NACKCount `json:"nacks,omitempty"`
}

// NACKCount counts NACKs of one type and reason (the gRPC code of istiod's error detail).
type NACKCount struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// MetadataReport is the node metadata key under which a relay sends its Report (JSON) on
// its upstream stream; the relay resends its node with it whenever the report changes.
const MetadataReport = "MESHFED_ISTIO_SOURCE_REPORT"

// maxReportBytes bounds a relay's report (it comes from the network).
const maxReportBytes = 1 << 20

// onNode records a request's node: the stream's node id, and a relay's report.
func (s *Server) onNode(c *conn, n *corev3.Node) {
	c.mu.Lock()
	first := c.node == "" && n.GetId() != ""
	if first {
		c.node = n.GetId()
	}
	c.mu.Unlock()
	if first {
		s.log.Info("istiod connected", "node", n.GetId(), "peer", c.peer)
	}
	v, ok := n.GetMetadata().GetFields()[MetadataReport]
	if !ok {
		if first {
			s.startRootsProbe(c)
		}
		return
	}
	raw := v.GetStringValue()
	rep := &Report{}
	if len(raw) > maxReportBytes {
		s.log.Warn("a config source's report is too large; ignored", "node", n.GetId(), "bytes", len(raw))
		return
	}
	if err := json.Unmarshal([]byte(raw), rep); err != nil {
		s.log.Warn("a config source's report does not decode; ignored", "node", n.GetId(), "err", err)
		return
	}
	c.mu.Lock()
	c.relay, c.report = true, rep
	c.mu.Unlock()
	s.statusChanged()
}

// reportMetadata is the node metadata carrying rep.
func reportMetadata(rep *Report) (*structpb.Struct, string, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, "", err
	}
	st, err := structpb.NewStruct(map[string]any{MetadataReport: string(b)})
	return st, string(b), err
}

// Report returns what this server knows about the istiods it feeds (see Report).
func (s *Server) Report() *Report {
	rep := &Report{Istiods: []ConnStatus{}}
	unknown := map[string]bool{}
	nacks := map[[2]string]uint64{}
	s.mu.Lock()
	for t := range s.unknown {
		unknown[t] = true
	}
	for k, n := range s.nacks {
		nacks[k] += n
	}
	relays := map[string]*Report{}
	for _, c := range s.conns {
		c.mu.Lock()
		if c.relay && c.report != nil {
			relays[c.node] = c.report
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	for _, cs := range s.Status() {
		if !cs.Relay {
			rep.Istiods = append(rep.Istiods, cs)
		}
	}
	for node, r := range relays {
		rep.Sources = append(rep.Sources, node)
		for _, cs := range r.Istiods {
			if cs.Via == "" {
				cs.Via = node
			}
			rep.Istiods = append(rep.Istiods, cs)
		}
		for _, t := range r.UnknownTypes {
			unknown[t] = true
		}
		for _, n := range r.NACKs {
			nacks[[2]string{n.Type, n.Reason}] += n.Count
		}
	}
	sort.Strings(rep.Sources)
	sort.SliceStable(rep.Istiods, func(i, j int) bool {
		a, b := rep.Istiods[i], rep.Istiods[j]
		if a.Via != b.Via {
			return a.Via < b.Via
		}
		return a.Node+a.Peer < b.Node+b.Peer
	})
	for t := range unknown {
		rep.UnknownTypes = append(rep.UnknownTypes, t)
	}
	sort.Strings(rep.UnknownTypes)
	for k, n := range nacks {
		rep.NACKs = append(rep.NACKs, NACKCount{Type: k[0], Reason: k[1], Count: n})
	}
	sort.Slice(rep.NACKs, func(i, j int) bool {
		if rep.NACKs[i].Type != rep.NACKs[j].Type {
			return rep.NACKs[i].Type < rep.NACKs[j].Type
		}
		return rep.NACKs[i].Reason < rep.NACKs[j].Reason
	})
	return rep
}

// StateInfo says when the served state last changed and whether it is still the one read
// from the state file at start.
func (s *Server) StateInfo() (at time.Time, fromDisk bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateAt, s.fromDisk
}
