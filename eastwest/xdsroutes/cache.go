package xdsroutes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/internal/atomicfile"
)

// The last good table is optionally kept in a file (Config.CacheFile), so that a gateway
// restarted while its federation is unreachable starts routing with it instead of staying
// unready: static stability across restarts, not only across outages.

// cacheVersion is the version of the cache file format.
const cacheVersion = 1

// maxCacheBytes bounds what is read back (a table of 100k endpoints is ~10 MiB).
const maxCacheBytes = 64 << 20

type cacheFile struct {
	Version  int            `json:"version"`
	Cluster  string         `json:"cluster"`
	Domain   string         `json:"domain"`
	SavedAt  time.Time      `json:"savedAt"`
	Origin   string         `json:"origin,omitempty"`
	Services []cacheService `json:"services"`
}

type cacheService struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Port      uint32          `json:"port"`
	Endpoints []cacheEndpoint `json:"endpoints"`
}

type cacheEndpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	Zone    string `json:"zone,omitempty"`
	Ready   bool   `json:"ready"`
	Weight  uint32 `json:"weight,omitempty"`
	// HBONEPort is the endpoint's HBONE port (0: none).
	HBONEPort uint32 `json:"hbonePort,omitempty"`
}

// encodeCache renders the table for the cache file (services in key order).
func encodeCache(t *eastwest.RouteTable, cluster, domain string, now time.Time) ([]byte, error) {
	f := cacheFile{Version: cacheVersion, Cluster: cluster, Domain: domain, SavedAt: now.UTC(), Origin: t.Origin,
		Services: make([]cacheService, 0, t.Len())}
	for _, k := range t.Keys() {
		cs := cacheService{Namespace: k.Namespace, Name: k.Name, Port: k.Port, Endpoints: make([]cacheEndpoint, 0, len(t.Services[k]))}
		for _, e := range t.Services[k] {
			cs.Endpoints = append(cs.Endpoints, cacheEndpoint(e))
		}
		f.Services = append(f.Services, cs)
	}
	return json.Marshal(f)
}

// parseCache reads a cache file back and checks every field: it is only used if it is
// this cluster's, for this domain, whole and valid.
func parseCache(data []byte, cluster, domain string) (*eastwest.RouteTable, time.Time, error) {
	if len(data) > maxCacheBytes {
		return nil, time.Time{}, fmt.Errorf("%d bytes: larger than %d", len(data), maxCacheBytes)
	}
	var f cacheFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, time.Time{}, errors.New("trailing data after the table")
	}
	var errs validate.Errors
	if f.Version != cacheVersion {
		errs.Add("version", "%d: this gateway reads version %d", f.Version, cacheVersion)
	}
	if f.Cluster != cluster {
		errs.Add("cluster", "%q: this gateway is cluster %q", f.Cluster, cluster)
	}
	if f.Domain != domain {
		errs.Add("domain", "%q: this gateway routes %q", f.Domain, domain)
	}
	if f.SavedAt.IsZero() {
		errs.Add("savedAt", "missing")
	}
	t := &eastwest.RouteTable{Services: make(map[eastwest.ServiceKey][]eastwest.Endpoint, len(f.Services))}
	for i, s := range f.Services {
		at := fmt.Sprintf("services[%d]", i)
		if validate.DNSLabel(s.Namespace) != nil || validate.DNSLabel(s.Name) != nil {
			errs.Add(at, "namespace and name must be DNS labels")
		}
		if s.Port == 0 || s.Port > 65535 {
			errs.Add(at+".port", "%d: use 1-65535", s.Port)
		}
		k := eastwest.ServiceKey{Namespace: s.Namespace, Name: s.Name, Port: s.Port}
		if _, dup := t.Services[k]; dup {
			errs.Add(at, "%s listed twice", k)
		}
		seen := map[string]bool{}
		eps := make([]eastwest.Endpoint, 0, len(s.Endpoints))
		for j, e := range s.Endpoints {
			eat := fmt.Sprintf("%s.endpoints[%d]", at, j)
			ip, err := netip.ParseAddr(e.Address)
			if err != nil || ip.Zone() != "" || ip.String() != e.Address {
				errs.Add(eat+".address", "%q is not an IP literal in canonical form", e.Address)
			}
			if e.Port == 0 || e.Port > 65535 {
				errs.Add(eat+".port", "%d: use 1-65535", e.Port)
			}
			if e.HBONEPort > 65535 {
				errs.Add(eat+".hbonePort", "HBONE port %d: use 1-65535 (or leave it out)", e.HBONEPort)
			}
			ep := eastwest.Endpoint(e)
			if seen[ep.HostPort()] {
				errs.Add(eat, "%s listed twice", ep.HostPort())
			}
			seen[ep.HostPort()] = true
			eps = append(eps, ep)
		}
		t.Services[k] = eps
	}
	if err := errs.Err(); err != nil {
		return nil, time.Time{}, err
	}
	return t, f.SavedAt, nil
}

// loadCache reads the cache file; ok is false (with the reason logged) when there is none
// usable.
func (s *Source) loadCache() (*eastwest.RouteTable, bool) {
	path := s.cfg.CacheFile
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("no cached route table yet", "cache", path)
		return nil, false
	}
	if err != nil {
		s.log.Warn("cached route table unreadable; waiting for the federation", "cache", path, "err", err)
		return nil, false
	}
	t, saved, err := parseCache(data, s.cfg.Cluster, s.cfg.Domain)
	if err != nil {
		s.log.Warn("cached route table refused; waiting for the federation", "cache", path, "err", err)
		return nil, false
	}
	if age := time.Since(saved); s.cfg.CacheMaxAge > 0 && age > s.cfg.CacheMaxAge {
		s.log.Warn("cached route table too old; waiting for the federation", "cache", path, "saved_at", saved,
			"age", age.Round(time.Second), "max_age", s.cfg.CacheMaxAge)
		return nil, false
	}
	t.Origin = fmt.Sprintf("cache %s (saved %s)", path, saved.Format(time.RFC3339))
	return t, true
}

// saveCache writes the table in force atomically (temporary file, fsync, rename): a crash
// leaves the old file or the new one, never half of one.
func (s *Source) saveCache(t *eastwest.RouteTable) {
	path := s.cfg.CacheFile
	data, err := encodeCache(t, s.cfg.Cluster, s.cfg.Domain, time.Now())
	if err == nil {
		err = atomicfile.Write(path, data, 0o600)
	}
	if err != nil {
		s.m.cacheErrors.Inc()
		s.log.Warn("could not save the route table cache", "cache", path, "err", err)
	}
}
