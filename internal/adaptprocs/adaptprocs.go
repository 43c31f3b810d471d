package adaptprocs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config tunes the controller; zero fields take the defaults named.
type Config struct {
	// Interval is how often the process's CPU time is read (default 250ms).
	Interval time.Duration
	// Up: one Interval at one P using more than Up cores restores the default (0.7).
	Up float64
	// Down: the process's CPU use, averaged over DownAfter, under Down cores at the
	// default GOMAXPROCS moves it to one P (default 0.35; must be < Up).
	Down float64
	// DownAfter is how long the use must stay low before going to one P (default 2s).
	DownAfter time.Duration
	// Log gets one line per change (default slog.Default()).
	Log *slog.Logger
	// Registerer, when set, gets <Namespace>_gomaxprocs and
	// <Namespace>_gomaxprocs_changes_total; Namespace defaults to "meshfed".
	Registerer prometheus.Registerer
	Namespace  string
	// cpu reads the process's CPU time (tests replace it).
	cpu func() (time.Duration, error)
}

func (c *Config) defaults() error {
	if c.Interval == 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.Up == 0 {
		c.Up = 0.7
	}
	if c.Down == 0 {
		c.Down = 0.35
	}
	if c.DownAfter == 0 {
		c.DownAfter = 2 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Namespace == "" {
		c.Namespace = "meshfed"
	}
	if c.cpu == nil {
		c.cpu = processCPU
	}
	switch {
	case c.Interval < 0 || c.DownAfter < c.Interval:
		return fmt.Errorf("interval %v and down-after %v: want 0 < interval <= down-after", c.Interval, c.DownAfter)
	case c.Down <= 0 || c.Up <= c.Down:
		return fmt.Errorf("down %.2f and up %.2f cores: want 0 < down < up", c.Down, c.Up)
	}
	return nil
}

// ErrFixed is returned by Run when the environment sets GOMAXPROCS: the user's setting is
// kept as it is.
var ErrFixed = errors.New("GOMAXPROCS is set in the environment: left as it is")

// decide is the controller's rule: given the Ps now, the default, the cores used over the
// last interval and how long use has been under Down, the Ps to run with.
func decide(procs, def int, cores float64, lowFor time.Duration, c *Config) int {
	switch {
	case procs == 1 && def > 1 && cores > c.Up:
		return def
	case procs > 1 && lowFor >= c.DownAfter:
		return 1
	}
	return procs
}

// Run controls GOMAXPROCS until ctx ends, then restores the default. It returns at once
// with ErrFixed when the environment sets GOMAXPROCS, and with nil, doing nothing, when
// the default is already one P.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	if _, ok := os.LookupEnv("GOMAXPROCS"); ok {
		return ErrFixed
	}
	runtime.SetDefaultGOMAXPROCS()
	if runtime.GOMAXPROCS(0) == 1 {
		cfg.Log.Info("adaptive GOMAXPROCS: the default is already 1, nothing to adapt")
		return nil
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: cfg.Namespace + "_gomaxprocs",
		Help: "Ps the Go scheduler runs with now (adaptive GOMAXPROCS: 1 while the process needs less than a core)."})
	changes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: cfg.Namespace + "_gomaxprocs_changes_total",
		Help: "Changes of GOMAXPROCS by the adaptive controller, by direction (up: to the default, down: to 1)."}, []string{"direction"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(gauge); err != nil {
			return fmt.Errorf("adaptive GOMAXPROCS metrics: %w", err)
		}
		if err := cfg.Registerer.Register(changes); err != nil {
			return fmt.Errorf("adaptive GOMAXPROCS metrics: %w", err)
		}
	}
	defer runtime.SetDefaultGOMAXPROCS()
	// def is the default as found at start; going up asks the runtime again
	// (SetDefaultGOMAXPROCS), so a cgroup limit changed since is followed.
	def := runtime.GOMAXPROCS(0)
	procs := def
	gauge.Set(float64(procs))
	last, err := cfg.cpu()
	if err != nil {
		return fmt.Errorf("adaptive GOMAXPROCS: reading the process's CPU time: %w", err)
	}
	lastAt := time.Now()
	var lowFor time.Duration
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now, err := cfg.cpu()
		if err != nil {
			return fmt.Errorf("adaptive GOMAXPROCS: reading the process's CPU time: %w", err)
		}
		at := time.Now()
		el := at.Sub(lastAt)
		cores := float64(now-last) / float64(el)
		last, lastAt = now, at
		if cores < cfg.Down {
			lowFor += el
		} else {
			lowFor = 0
		}
		next := decide(procs, def, cores, lowFor, &cfg)
		if next == procs {
			continue
		}
		if next == 1 {
			runtime.GOMAXPROCS(1)
			changes.WithLabelValues("down").Inc()
		} else {
			runtime.SetDefaultGOMAXPROCS()
			if next = runtime.GOMAXPROCS(0); next == procs {
				continue // the default is one P now (a cgroup limit): nothing to go up to
			}
			changes.WithLabelValues("up").Inc()
		}
		cfg.Log.Info("adaptive GOMAXPROCS", "from", procs, "to", next, "cores_used", fmt.Sprintf("%.2f", cores))
		procs, lowFor = next, 0
		gauge.Set(float64(procs))
	}
}
