package exports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/api/validate"
)

// Limits keep one file (and so one etcd record per service) well inside etcd's request size.
const (
	MaxFileBytes           = 8 << 20
	MaxServices            = 50000
	MaxPortsPerService     = 64
	MaxEndpointsPerService = 5000
	DefaultEndpointWeight  = 1
	MaxEndpointWeight      = 1 << 20
	ProtocolTCP            = "TCP"
)

// File is the whole exports file.
type File struct {
	Services []Service `json:"services"`
}

// Service is one exported service.
type Service struct {
	Name      string     `json:"name"`
	Namespace string     `json:"namespace"`
	Ports     []Port     `json:"ports"`
	Endpoints []Endpoint `json:"endpoints,omitempty"`
}

// Port is one port of a service. Port is what callers (and the SNI) use; TargetPort is
// what the gateway dials on an endpoint (default: Port).
type Port struct {
	Name        string `json:"name,omitempty"`
	Port        int32  `json:"port"`
	TargetPort  int32  `json:"targetPort,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one backend of a service.
type Endpoint struct {
	Address string `json:"address"`
	Zone    string `json:"zone,omitempty"`
	// Ready defaults to true when absent.
	Ready  *bool  `json:"ready,omitempty"`
	Weight uint32 `json:"weight,omitempty"`
	// HBONEPort, when set, is the endpoint's HBONE port (Istio ambient: 15008, where its
	// node's ztunnel accepts HTTP/2 CONNECT for it). A service port is reachable over
	// HBONE only through endpoints that have one.
	HBONEPort int32 `json:"hbonePort,omitempty"`
	// ServiceAccount, when set, is the Kubernetes service account of the workload behind
	// the endpoint (a DNS-1123 subdomain, as Kubernetes names them). With the exporting
	// cluster's trust domain it makes the workload's SPIFFE ID,
	// spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>, which Istio checks the
	// server's certificate against (docs/istio.md, "Identity: subjectAltNames").
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// Key is namespace/name.
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Target is the port the gateway dials on an endpoint.
func (p Port) Target() int32 {
	if p.TargetPort != 0 {
		return p.TargetPort
	}
	return p.Port
}

// IsReady reports the endpoint's readiness (true when not given).
func (e Endpoint) IsReady() bool { return e.Ready == nil || *e.Ready }

// EffectiveWeight is the weight, defaulting to 1.
func (e Endpoint) EffectiveWeight() uint32 {
	if e.Weight == 0 {
		return DefaultEndpointWeight
	}
	return e.Weight
}

// HBONE reports whether the endpoint takes HBONE tunnels (has an HBONE port).
func (e Endpoint) HBONE() bool { return e.HBONEPort != 0 }

// PortByNumber finds the service port whose Port is n.
func (s *Service) PortByNumber(n int32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Port == n {
			return p, true
		}
	}
	return Port{}, false
}

// ReadyEndpoints counts endpoints that are ready.
func (s *Service) ReadyEndpoints() int {
	n := 0
	for _, e := range s.Endpoints {
		if e.IsReady() {
			n++
		}
	}
	return n
}

// Parse decodes a YAML or JSON exports file, rejects unknown fields (a typo such as
// `target_port` must not silently fall back to a default; encoding/json matches field names
// case-insensitively, so `targetport` is understood as targetPort), fills defaults and validates.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("exports file is %d bytes; the limit is %d: split the services across clusters or files", len(data), MaxFileBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("exports file is empty: write `services: []` to export nothing")
	}
	jsonData, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("exports file is neither valid YAML nor JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(jsonData))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("exports file: %w", humanJSONError(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("exports file: trailing data after the first document")
	}
	f.Normalize()
	if err := f.Validate(); err != nil {
		return nil, err
	}
	f.Sort()
	return &f, nil
}

// Load reads and parses path.
func Load(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read exports file: %w", err)
	}
	if st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("exports file %s is %d bytes; the limit is %d", path, st.Size(), MaxFileBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read exports file: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func humanJSONError(err error) error {
	msg := err.Error()
	// encoding/json says `json: unknown field "x"`; say where it is allowed to be fixed.
	if strings.HasPrefix(msg, "json: unknown field ") {
		return fmt.Errorf("%s (fields are: services[].name, namespace, ports[].{name,port,targetPort,protocol,appProtocol}, endpoints[].{address,zone,ready,weight,hbonePort,serviceAccount})", strings.TrimPrefix(msg, "json: "))
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: expected %s, got %s", te.Field, te.Type, te.Value)
	}
	return err
}

// Normalize fills defaults in place (protocol TCP). It keeps the order, so that
// validation errors point at the entries as the user wrote them.
func (f *File) Normalize() {
	for i := range f.Services {
		s := &f.Services[i]
		for j := range s.Ports {
			if s.Ports[j].Protocol == "" {
				s.Ports[j].Protocol = ProtocolTCP
			}
		}
	}
}

// Sort puts services and endpoints in a stable order so that equal content compares
// equal (and a reload that only reorders lines publishes nothing).
func (f *File) Sort() {
	for i := range f.Services {
		s := &f.Services[i]
		sort.SliceStable(s.Endpoints, func(a, b int) bool { return s.Endpoints[a].Address < s.Endpoints[b].Address })
	}
	sort.SliceStable(f.Services, func(a, b int) bool { return f.Services[a].Key() < f.Services[b].Key() })
}

// Validate checks every field and reports every problem at once.
func (f *File) Validate() error {
	var errs validate.Errors
	if len(f.Services) > MaxServices {
		errs.Add("services", "%d services; at most %d per file", len(f.Services), MaxServices)
	}
	seen := make(map[string]int, len(f.Services))
	for i := range f.Services {
		s := &f.Services[i]
		path := fmt.Sprintf("services[%d]", i)
		ValidateService(&errs, path, s)
		if j, dup := seen[s.Key()]; dup {
			errs.Add(path, "service %s is listed twice (also services[%d]): merge the entries", s.Key(), j)
		}
		seen[s.Key()] = i
	}
	return errs.Err()
}

// ValidateService checks one service and adds its problems under path.
func ValidateService(errs *validate.Errors, path string, s *Service) {
	if err := validate.DNSLabel(s.Name); err != nil {
		errs.Add(join(path, "name"), "%v", err)
	}
	if err := validate.DNSLabel(s.Namespace); err != nil {
		errs.Add(join(path, "namespace"), "%v", err)
	}
	if len(s.Ports) == 0 {
		errs.Add(join(path, "ports"), "no ports: list at least one, e.g. {name: tls, port: 8443}")
	}
	if len(s.Ports) > MaxPortsPerService {
		errs.Add(join(path, "ports"), "%d ports; at most %d", len(s.Ports), MaxPortsPerService)
	}
	ports := map[int32]int{}
	names := map[string]int{}
	for j, p := range s.Ports {
		pp := join(path, fmt.Sprintf("ports[%d]", j))
		if err := validate.Port(int64(p.Port)); err != nil {
			errs.Add(pp+".port", "%v", err)
		}
		if p.TargetPort != 0 {
			if err := validate.Port(int64(p.TargetPort)); err != nil {
				errs.Add(pp+".targetPort", "%v (or leave it out to use port)", err)
			}
		}
		if p.Protocol != "" && p.Protocol != ProtocolTCP {
			errs.Add(pp+".protocol", "%q is not supported: the east-west gateway carries TLS over TCP only; use TCP", p.Protocol)
		}
		if p.Name != "" {
			if err := validate.DNSLabel(p.Name); err != nil {
				errs.Add(pp+".name", "%v", err)
			}
			if k, dup := names[p.Name]; dup {
				errs.Add(pp+".name", "%q is also the name of ports[%d]: port names must be unique", p.Name, k)
			}
			names[p.Name] = j
		} else if len(s.Ports) > 1 {
			errs.Add(pp+".name", "required when a service has more than one port")
		}
		if k, dup := ports[p.Port]; dup && p.Port != 0 {
			errs.Add(pp+".port", "%d is also ports[%d]: port numbers must be unique", p.Port, k)
		}
		ports[p.Port] = j
	}
	if len(s.Endpoints) > MaxEndpointsPerService {
		errs.Add(join(path, "endpoints"), "%d endpoints; at most %d per service", len(s.Endpoints), MaxEndpointsPerService)
	}
	addrs := map[string]int{}
	for j, e := range s.Endpoints {
		ep := join(path, fmt.Sprintf("endpoints[%d]", j))
		if err := validate.IP(e.Address); err != nil {
			errs.Add(ep+".address", "%v", err)
		}
		if k, dup := addrs[e.Address]; dup {
			errs.Add(ep+".address", "%s is also endpoints[%d]: list each address once", e.Address, k)
		}
		addrs[e.Address] = j
		if e.Zone != "" {
			if err := validate.DNSLabel(e.Zone); err != nil {
				errs.Add(ep+".zone", "%v", err)
			}
		}
		if e.Weight > MaxEndpointWeight {
			errs.Add(ep+".weight", "%d is too large; use 1-%d", e.Weight, MaxEndpointWeight)
		}
		if e.HBONEPort != 0 {
			if err := validate.Port(int64(e.HBONEPort)); err != nil {
				errs.Add(ep+".hbonePort", "%v (Istio ambient's is 15008; or leave it out when the endpoint takes no HBONE)", err)
			}
		}
		if e.ServiceAccount != "" {
			if err := validate.DNSSubdomain(e.ServiceAccount); err != nil {
				errs.Add(ep+".serviceAccount", "%v (the Kubernetes service account name of the workload behind the endpoint, e.g. echo; or leave it out when unknown)", err)
			}
		}
	}
}

// join appends field to a field path ("" is the root).
func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
