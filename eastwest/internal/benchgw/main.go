package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "")
	admin := flag.String("admin", "127.0.0.1:0", "")
	exports := flag.String("exports", "", "")
	mode := flag.String("copy-mode", "auto", "")
	prof := flag.String("cpuprofile", "", "")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *prof != "" {
		f, err := os.Create(*prof)
		if err != nil {
			panic(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := process.Start(ctx, process.Config{
		Gateway: eastwest.Config{Cluster: "bench", CopyMode: eastwest.CopyMode(*mode), Log: log, IdleTimeout: time.Hour, ConnectAttempts: 3, DrainTimeout: 30 * time.Second},
		Listen:  *listen, Admin: *admin, Exports: *exports,
	})
	if err != nil {
		panic(err)
	}
	_ = p.Wait()
	p.Close()
}
