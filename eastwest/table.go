package eastwest

import "github.com/meshfed/meshfed/api/names"

// table is the compiled route table in force.
type table struct {
	src         *RouteTable
	bySNI       map[string]*route
	byAuthority map[string]*route // HBONE: "<svc>.<ns>.svc.<domain>:<port>"
	ready       int               // ready endpoints over all routes
	routes      int
}

// SetRoutes puts a route table in force. Live connections are not touched: they keep the
// endpoint they have. Endpoint state (active counts, ejections) carries over by address.
// Every service port is routable by SNI and by HBONE authority; over HBONE only through
// its ready endpoints that have an HBONE port.
func (g *Gateway) SetRoutes(t *RouteTable) {
	if t == nil {
		t = &RouteTable{}
	}
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	nt := &table{src: t, bySNI: make(map[string]*route, len(t.Services)), byAuthority: make(map[string]*route, len(t.Services))}
	usedEP := map[string]bool{}
	usedSvc := map[string]bool{}
	for _, k := range t.Keys() {
		svc := g.service(k.Service())
		usedSvc[svc.name] = true
		r := &route{key: k, svc: svc, stats: &svc.sni,
			name: names.SNI{Port: k.Port, Service: k.Name, Namespace: k.Namespace, Domain: g.cfg.Domain}.String()}
		h := &route{key: k, svc: svc, stats: &svc.hbone,
			name: names.Authority{Service: k.Name, Namespace: k.Namespace, Domain: g.cfg.Domain, Port: k.Port}.String()}
		for _, e := range t.Services[k] {
			if !e.Ready {
				continue
			}
			r.eps = append(r.eps, g.endpoint(e.HostPort(), e, usedEP))
			if e.HBONEPort != 0 {
				h.eps = append(h.eps, g.endpoint(e.HBONEHostPort(), e, usedEP))
			}
		}
		r.ready, h.ready = len(r.eps), len(r.eps)
		nt.ready += len(r.eps)
		nt.bySNI[r.name] = r
		nt.byAuthority[h.name] = h
	}
	nt.routes = len(nt.bySNI)
	for a := range g.eps {
		if !usedEP[a] {
			delete(g.eps, a)
		}
	}
	for n, s := range g.svcs {
		if !usedSvc[n] && s.active.Load() == 0 {
			delete(g.svcs, n)
			g.m.active.DeletePartialMatch(map[string]string{"service": n})
		}
	}
	g.setFaults(t.Faults)
	old := g.tbl.Swap(nt)
	g.m.routes.Set(float64(nt.routes))
	g.m.updates.Inc()
	if old == nil || old.routes != nt.routes || old.ready != nt.ready {
		g.log.Info("route table in force", "origin", t.Origin, "service_ports", nt.routes, "ready_endpoints", nt.ready)
	} else {
		g.log.Debug("route table in force", "origin", t.Origin, "service_ports", nt.routes, "ready_endpoints", nt.ready)
	}
}

// service is the live state of service name, made on first use (stateMu held).
func (g *Gateway) service(name string) *svcState {
	if svc := g.svcs[name]; svc != nil {
		return svc
	}
	stats := func(protocol string) protoStats {
		return protoStats{
			protocol:    protocol,
			activeGauge: g.m.active.WithLabelValues(name, protocol),
			bytesIn:     g.m.bytes.WithLabelValues(name, protocol, "in"),
			bytesOut:    g.m.bytes.WithLabelValues(name, protocol, "out"),
		}
	}
	svc := &svcState{
		name:        name,
		sni:         stats(ProtocolSNI),
		hbone:       stats(ProtocolHBONE),
		connectErrs: g.m.connectErrs.WithLabelValues(name),
		ejections:   g.m.ejections.WithLabelValues(name),
	}
	g.svcs[name] = svc
	return svc
}

// endpoint is the live state of the endpoint dialled at addr, carried over from the last
// table unless its weight or zone changed (then its counts and ejection carry over).
func (g *Gateway) endpoint(addr string, e Endpoint, used map[string]bool) *epState {
	st := g.eps[addr]
	w := int64(e.Weight)
	if w <= 0 {
		w = 1
	}
	if st == nil || st.weight != w || st.zone != e.Zone {
		nst := &epState{addr: addr, zone: e.Zone, weight: w}
		if st == nil {
			nst.sa, nst.saErr = newSockaddr(addr)
		} else {
			nst.sa, nst.saErr = st.sa, st.saErr
			nst.active.Store(st.active.Load())
			nst.failures.Store(st.failures.Load())
			nst.ejectedUntil.Store(st.ejectedUntil.Load())
		}
		st = nst
		g.eps[addr] = st
	}
	used[addr] = true
	return st
}
