package eastwest

import "github.com/meshfed/meshfed/api/names"

// table is the compiled route table in force.
type table struct {
	src    *RouteTable
	bySNI  map[string]*route
	ready  int // ready endpoints over all routes
	routes int
}

// SetRoutes puts a route table in force. Live connections are not touched: they keep the
// endpoint they have. Endpoint state (active counts, ejections) carries over by address.
func (g *Gateway) SetRoutes(t *RouteTable) {
	if t == nil {
		t = &RouteTable{}
	}
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	nt := &table{src: t, bySNI: make(map[string]*route, len(t.Services))}
	usedEP := map[string]bool{}
	usedSvc := map[string]bool{}
	for _, k := range t.Keys() {
		svcName := k.Service()
		svc := g.svcs[svcName]
		if svc == nil {
			svc = &svcState{
				name:        svcName,
				activeGauge: g.m.active.WithLabelValues(svcName),
				bytesIn:     g.m.bytes.WithLabelValues(svcName, "in"),
				bytesOut:    g.m.bytes.WithLabelValues(svcName, "out"),
				connectErrs: g.m.connectErrs.WithLabelValues(svcName),
				ejections:   g.m.ejections.WithLabelValues(svcName),
			}
			g.svcs[svcName] = svc
		}
		usedSvc[svcName] = true
		r := &route{key: k, svc: svc,
			sni: names.SNI{Port: k.Port, Service: k.Name, Namespace: k.Namespace, Domain: g.cfg.Domain}.String()}
		for _, e := range t.Services[k] {
			if !e.Ready {
				continue
			}
			addr := e.HostPort()
			st := g.eps[addr]
			w := int64(e.Weight)
			if w <= 0 {
				w = 1
			}
			if st == nil || st.weight != w || st.zone != e.Zone {
				nst := &epState{addr: addr, zone: e.Zone, weight: w}
				if st != nil {
					// Keep counts and ejection; weight or zone changed.
					nst.active.Store(st.active.Load())
					nst.failures.Store(st.failures.Load())
					nst.ejectedUntil.Store(st.ejectedUntil.Load())
				}
				st = nst
				g.eps[addr] = st
			}
			usedEP[addr] = true
			r.eps = append(r.eps, st)
		}
		nt.ready += len(r.eps)
		nt.bySNI[r.sni] = r
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
			g.m.active.DeleteLabelValues(n)
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
