package source

import (
	"context"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// Dev publishes the trusted roots of meshfed's development CA (DIR/<td>), created on first
// use, and follows its changes (a rotation job adds and removes roots there).
type Dev struct {
	*tracker
	td, dir string
	poll    time.Duration
}

// NewDev makes a dev CA source.
func NewDev(td, dir string, opts Options) *Dev {
	p := opts.Poll
	if p <= 0 {
		p = time.Second
	}
	return &Dev{tracker: newTracker("dev", opts.Log, opts.Metrics), td: td, dir: dir, poll: p}
}

func (d *Dev) String() string { return "dev:" + d.dir }

// Run implements Source.
func (d *Dev) Run(ctx context.Context, update func(*trust.Bundle)) error {
	var ca *devca.CA
	for ctx.Err() == nil {
		var err error
		if ca == nil {
			ca, err = devca.Init(d.dir, d.td, devca.Options{})
		}
		if err == nil {
			var b *trust.Bundle
			b, err = ca.Bundle(time.Now())
			if err == nil && d.good(b) {
				update(b)
			}
		}
		if err != nil {
			d.fail(fmt.Errorf("dev CA %s: %w", d.dir, err))
		}
		if !ctxtime.Sleep(ctx, d.poll) {
			break
		}
	}
	return nil
}

var _ Source = (*Dev)(nil)
