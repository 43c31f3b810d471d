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

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/internal/waitfor"
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
	fmt.Printf("\nreset fraction under drill --fault error=F (testbed, %d new TLS connections from the host to west's gateway per fault):\n%s\n",
		errorConns, errorFractionRow(t, tb, n, 0.3))
}

// errorConns is how many new connections each error fault is measured with.
const errorConns = 100

// errorFractionRow runs n error=fraction drills against west and measures, for each, the
// fraction of errorConns new connections to west's gateway that were reset, and whether
// east's client left west meanwhile (it should not: the fault hits new connections, not
// the health stream nor the client's open connection).
func errorFractionRow(t *testing.T, tb *Testbed, n int, fraction float64) string {
	east, west := tb.Cluster("east"), tb.Cluster("west")
	sni := names.ServiceSNI(ServiceNamespace, "echo", ServicePort)
	var got []float64
	moved := 0
	for i := 0; i < n; i++ {
		d := startDrill(t, tb, "west", fmt.Sprintf("error=%v", fraction), "--duration", "60s", "--lease-ttl", "5s")
		if !waitfor.Poll(15*time.Second, func() bool { return tlsTo(east, west.GatewayAddr, sni, time.Second) != nil }) {
			t.Fatalf("error=%v #%d: no connection reset within 15s", fraction, i)
		}
		from := time.Now()
		reset := 0
		for j := 0; j < errorConns; j++ {
			if tlsTo(east, west.GatewayAddr, sni, 2*time.Second) != nil {
				reset++
			}
		}
		for _, c := range east.Calls.Between(from, time.Now()) {
			if c.Cluster != "" && c.Cluster != "west" {
				moved++
				break
			}
		}
		got = append(got, float64(reset)/errorConns)
		_ = d.cmd.Process.Signal(os.Interrupt)
		<-d.exited
		if !waitfor.Poll(15*time.Second, func() bool { return tlsTo(east, west.GatewayAddr, sni, time.Second) == nil }) {
			t.Fatalf("error=%v #%d: west's gateway still resets after the drill", fraction, i)
		}
	}
	slices.Sort(got)
	row := fmt.Sprintf("%-36s n=%-3d reset fraction p50 %.2f  min %.2f  max %.2f  east's client moved off west in %d of %d faults",
		fmt.Sprintf("drill --fault error=%v", fraction), n, got[len(got)/2], got[0], got[len(got)-1], moved, n)
	t.Log(row)
	return row
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
