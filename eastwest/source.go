package eastwest

import (
	"context"
	"errors"
	"sync"
)

// apply validates t and puts it in force; an invalid table is refused and logged, and the
// last good one stays. It reports whether t is now in force.
func (g *Gateway) apply(t *RouteTable) bool {
	if err := t.Validate(); err != nil {
		g.log.Error("route table refused; keeping the last good one", "origin", t.Origin, "err", err)
		return false
	}
	g.SetRoutes(t)
	return true
}

// RunSource runs src, putting each table it delivers in force, until ctx ends. It returns
// src's error when no first table could be had.
func (g *Gateway) RunSource(ctx context.Context, src RouteSource) error {
	return src.Run(ctx, func(t *RouteTable) { g.apply(t) })
}

// StartSource runs src in the background and returns once its first table is in force,
// or with src's error when it cannot produce one (an invalid exports file at start-up is
// an error, not an empty gateway). Later tables are put in force as they come.
func (g *Gateway) StartSource(ctx context.Context, src RouteSource) error {
	first := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(ctx, func(t *RouteTable) {
			if g.apply(t) {
				once.Do(func() { close(first) })
			}
		})
	}()
	select {
	case <-first:
		go func() {
			if err := <-errc; err != nil {
				g.log.Error("route source stopped; the last table stays in force", "err", err)
			}
		}()
		return nil
	case err := <-errc:
		if err == nil {
			err = errors.New("route source ended before delivering a table")
		}
		return err
	}
}

// ObserveReload counts a route source reload attempt (wire FileSource.OnReload to it).
func (g *Gateway) ObserveReload(err error) {
	if err != nil {
		g.m.reloads.WithLabelValues("invalid").Inc()
		return
	}
	g.m.reloads.WithLabelValues("ok").Inc()
}
