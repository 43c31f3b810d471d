package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/internal/healthprobe"
)

// maxOutstanding bounds the pings in flight on one stream: at PingInterval 250ms and
// DownAfter 2s there are at most 9 before the stream is declared dead.
const maxOutstanding = 64

// stream checks k over an open health stream until it fails (the failure is applied) or
// ctx ends. Every PingInterval it writes a ping; each answer is one check; the oldest
// unanswered ping growing older than DownAfter is a timeout. Answers are matched to pings
// in order, so an answer's RTT is the time since its ping was written.
func (c *Checker) stream(ctx context.Context, k Target, tc *tls.Conn, opened time.Time) {
	defer tc.Close()
	_ = tc.SetDeadline(time.Time{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopCut := context.AfterFunc(sctx, func() { _ = tc.SetDeadline(time.Unix(1, 0)) })
	defer stopCut()

	var mu sync.Mutex
	var sent []time.Time // write times of unanswered pings, oldest first
	ended := make(chan healthprobe.Outcome, 2)
	end := func(o healthprobe.Outcome) {
		select {
		case ended <- o:
		default:
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wg.Add(1)
	go func() { // writer
		defer wg.Done()
		tick := time.NewTicker(c.opts.PingInterval)
		defer tick.Stop()
		for {
			mu.Lock()
			if len(sent) < maxOutstanding {
				sent = append(sent, time.Now())
				mu.Unlock()
				_ = tc.SetWriteDeadline(time.Now().Add(c.opts.DownAfter))
				if _, err := tc.Write([]byte(healthwire.Ping)); err != nil {
					end(healthprobe.Classify(sctx, fmt.Errorf("ping %s: %w", k.Addr, err)))
					return
				}
			} else {
				mu.Unlock()
			}
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	wg.Add(1)
	go func() { // reader
		defer wg.Done()
		br := bufio.NewReaderSize(tc, healthwire.MaxLine+1)
		for {
			line, err := healthwire.ReadStreamLine(br)
			if err != nil {
				end(healthprobe.Classify(sctx, fmt.Errorf("read status line from %s: %w", k.Addr, err))) // the stream is broken
				return
			}
			out := healthprobe.Judge(line, k.Cluster, k.Addr)
			now := time.Now()
			mu.Lock()
			if len(sent) > 0 {
				out.RTT = now.Sub(sent[0])
				sent = sent[1:]
			}
			mu.Unlock()
			if out.Result == healthprobe.ResultBadLine {
				end(out)
				return
			}
			c.record(sctx, k, out, opened)
			if out.Result == healthprobe.ResultWrongCluster || (out.Result == healthprobe.ResultStatus && out.Line.Word == "draining") {
				end(healthprobe.Outcome{}) // already applied; the gateway closes a draining stream
				return
			}
		}
	}()

	watch := time.NewTicker(max(c.opts.PingInterval/4, 10*time.Millisecond))
	defer watch.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case out := <-ended:
			if out.Result != "" {
				c.record(ctx, k, out, opened)
			}
			return
		case now := <-watch.C:
			mu.Lock()
			var oldest time.Time
			if len(sent) > 0 {
				oldest = sent[0]
			}
			mu.Unlock()
			if !oldest.IsZero() && now.Sub(oldest) >= c.opts.DownAfter {
				c.record(ctx, k, healthprobe.Outcome{Result: healthprobe.ResultTimeout, RTT: now.Sub(oldest),
					Err: fmt.Errorf("%s: no answer to a health ping for %v", k.Addr, c.opts.DownAfter)}, opened)
				return
			}
		}
	}
}
