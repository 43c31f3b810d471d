package testbed

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchEnv runs TestFailoverTable (`make bench`, bench/60-testbed-failover.sh); its value
// is the number of faults per kind (10 in make bench).
const BenchEnv = "MESHFED_BENCH_FAILOVER"

// TestFailoverTable measures failover on the testbed, per fault kind: the network's
// (nftables blackhole and reset of west's gateway port) and the drill's gateway faults
// (`meshfed drill --fault`, carried out by west's own gateway), N faults each; for each,
// the time from the fault until east's client was served by north for good (its calls
// start every 100 ms: that is the resolution). It prints p50 and max per kind.
func TestFailoverTable(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(BenchEnv))
	if n < 1 {
		t.Skipf("set %s=N to measure N faults per kind (make bench)", BenchEnv)
	}
	tb := startTestbed(t, Options{})
	east := tb.Cluster("east")
	type kind struct {
		name   string
		inject func(ctx context.Context) (time.Time, func() time.Time, error)
	}
	network := func(mk func(context.Context, string) (*Fault, error)) func(ctx context.Context) (time.Time, func() time.Time, error) {
		return func(ctx context.Context) (time.Time, func() time.Time, error) {
			f, err := mk(ctx, "west")
			if err != nil {
				return time.Time{}, nil, err
			}
			return f.At, func() time.Time { _ = f.Lift(context.Background()); return time.Now() }, nil
		}
	}
	drill := func(spec string) func(ctx context.Context) (time.Time, func() time.Time, error) {
		return func(ctx context.Context) (time.Time, func() time.Time, error) {
			cmd := exec.CommandContext(ctx, tb.Opts.Bin, "drill", "--etcd-endpoints", tb.EtcdEndpoints, "--fail", "west",
				"--fault", spec, "--duration", "30s", "--lease-ttl", "5s")
			out, err := cmd.StdoutPipe()
			if err != nil {
				return time.Time{}, nil, err
			}
			cmd.Stderr = cmd.Stdout
			if err := cmd.Start(); err != nil {
				return time.Time{}, nil, err
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "fault ") {
					at := time.Now()
					go func() {
						for sc.Scan() {
						}
					}()
					// The lift: SIGINT ends the drill, which revokes its lease.
					return at, func() time.Time {
						_ = cmd.Process.Signal(os.Interrupt)
						_ = cmd.Wait()
						return time.Now()
					}, nil
				}
			}
			_ = cmd.Wait()
			return time.Time{}, nil, fmt.Errorf("drill --fault %s printed no fault line", spec)
		}
	}
	kinds := []kind{
		{"network blackhole (nftables drop)", network(tb.Blackhole)},
		{"network reset (nftables tcp reset)", network(tb.Reset)},
		{"drill --fault blackhole", drill("blackhole")},
		{"drill --fault reset", drill("reset")},
		{"drill --fault delay=3s", drill("delay=3s")},
	}
	var table []string
	for _, k := range kinds {
		var after []time.Duration
		failed := 0
		for i := 0; i < n; i++ {
			ctx := tctx(t, 2*time.Minute)
			at, liftFn, err := k.inject(ctx)
			if err != nil {
				t.Fatalf("%s #%d: %v", k.name, i, err)
			}
			fo, err := east.WaitFailover(ctx, "west", at, 15*time.Second, time.Second)
			back := liftFn()
			if err != nil {
				t.Fatalf("%s #%d: %v", k.name, i, err)
			}
			after = append(after, fo.After)
			failed += fo.Failed
			waitBack(t, tb, back)
		}
		slices.Sort(after)
		row := fmt.Sprintf("%-36s n=%-3d p50 %6.0f ms  max %6.0f ms  failed calls %d (%.1f per fault)", k.name, n,
			ms(after[len(after)/2]), ms(after[len(after)-1]), failed, float64(failed)/float64(n))
		t.Log(row)
		table = append(table, row)
	}
	fmt.Printf("\nfailover of east's client away from west (testbed, calls every 100 ms):\n%s\n", strings.Join(table, "\n"))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
