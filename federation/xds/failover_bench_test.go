package xds_test

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/health"
)

// BenchmarkFailover measures, with the production health timings (check every 1s, 500ms
// timeout, 250ms between checks while an address changes state, down after 3 failures,
// hard-down at once on refused/reset), the time from a
// fault on the nearest cluster's gateway to the first call a real grpc-go xDS client gets
// answered by the next cluster. Calls time out after 100ms, which bounds the resolution.
// The restore between iterations is not timed (the reassignment interval is shortened to
// 1s to keep the benchmark short: it only delays traffic coming back, not failover).
func BenchmarkFailover(b *testing.B) {
	for _, fault := range []string{"rst", "blackhole"} {
		b.Run(fault, func(b *testing.B) {
			e := startFailoverEnv(b, health.Options{}, time.Second)
			e.callTimeout = 100 * time.Millisecond
			e.waitServedBy(b, tdWest, 30*time.Second)
			var lat []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// A random phase against the 1s check cycle: the loop would otherwise
				// always strike right after a check (traffic comes back on one), the
				// worst case. (Not a synchronisation: nothing is waited for.)
				b.StopTimer()
				time.Sleep(rand.N(time.Second))
				b.StartTimer()
				start := time.Now()
				if fault == "rst" {
					e.proxy.kill()
				} else {
					e.proxy.blackhole()
				}
				e.waitServedBy(b, tdNorth, 20*time.Second)
				lat = append(lat, time.Since(start))
				b.StopTimer()
				e.proxy.restore(b)
				e.waitServedBy(b, tdWest, 30*time.Second)
				b.StartTimer()
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
