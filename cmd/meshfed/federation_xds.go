package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/federation/xds"
)

type xdsFlags struct {
	listen                        string
	minReassign                   time.Duration
	healthInterval, healthTimeout time.Duration
	certInstance                  string
}

func addXDSFlags(fl *pflag.FlagSet, f *xdsFlags) {
	fl.StringVar(&f.listen, "xds-listen", xds.DefaultListen, "xDS (ADS) listener for this cluster's gRPC clients, Envoys and east-west gateway")
	fl.DurationVar(&f.minReassign, "xds-min-reassign", planner.DefaultMinReassign, "shortest time between two priority reassignments of one service (a cluster going away is never held)")
	fl.DurationVar(&f.healthInterval, "health-interval", time.Second, "interval between health checks of each remote gateway address")
	fl.DurationVar(&f.healthTimeout, "health-timeout", 500*time.Millisecond, "timeout of one gateway health check (connect, TLS, status line)")
	fl.StringVar(&f.certInstance, "xds-cert-provider-instance", xds.DefaultCertProviderInstance, "certificate provider instance that proxyless gRPC bootstraps define")
}

func (f *xdsFlags) validate() error {
	var errs validate.Errors
	errs.AddErr("--xds-listen", validate.ListenAddr(f.listen))
	if f.minReassign < 0 {
		errs.Add("--xds-min-reassign", "must not be negative")
	}
	if f.healthInterval < 100*time.Millisecond {
		errs.Add("--health-interval", "%v: at least 100ms", f.healthInterval)
	}
	if f.healthTimeout <= 0 || f.healthTimeout > f.healthInterval {
		errs.Add("--health-timeout", "%v: positive and at most --health-interval", f.healthTimeout)
	}
	return errs.Err()
}
