package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseElector elects one leader among the replicas of a cluster's federation service
// with a coordination.k8s.io Lease (client-go leader election), so that two replicas are
// safe: only the leader publishes exports, writes ServiceExport conditions and imports.
type LeaseElector struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	// Identity names this replica (default: the pod's hostname).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's (defaults 15s, 10s, 2s):
	// a dead leader is replaced within about LeaseDuration.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Run campaigns until ctx ends, running lead while this replica leads; lead's context
// ends when leadership is lost, and Run waits for lead to return before campaigning again
// (a replica never writes after it lost the lease, as far as its own clock can tell).
func (e *LeaseElector) Run(ctx context.Context, lead func(context.Context)) error {
	if e.Client == nil || e.Namespace == "" || e.Name == "" || e.Identity == "" {
		return errors.New("leader election: client, namespace, lease name and identity are required")
	}
	log := e.Log
	if log == nil {
		log = slog.Default()
	}
	cfg := leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
			Client:     e.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
		},
		LeaseDuration:   orDefault(e.LeaseDuration, 15*time.Second),
		RenewDeadline:   orDefault(e.RenewDeadline, 10*time.Second),
		RetryPeriod:     orDefault(e.RetryPeriod, 2*time.Second),
		ReleaseOnCancel: true,
		Name:            e.Name,
	}
	for ctx.Err() == nil {
		var wg sync.WaitGroup
		c := cfg
		c.Callbacks = leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				wg.Add(1)
				defer wg.Done()
				lead(lctx)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != e.Identity {
					log.Info("federation leader elsewhere", "leader", id, "lease", e.Namespace+"/"+e.Name)
				}
			},
		}
		le, err := leaderelection.NewLeaderElector(c)
		if err != nil {
			return fmt.Errorf("leader election %s/%s: %w", e.Namespace, e.Name, err)
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
		wg.Wait()
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
