// Command flow-exporter reports every TCP connection of its workload (one network namespace) or of its
// host as flow records. See the README for its configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/agent"
	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/output"
	"github.com/flowlens/flowlens/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flow-exporter:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.LogLevel)
	if err != nil {
		return err
	}
	defer log.Sync()
	log = log.With(zap.String("component", "flow-exporter"))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once the first signal has begun the orderly shutdown, a second one kills as usual.
	context.AfterFunc(ctx, stop)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink, err := output.New(cfg.Output, os.Stdout)
	if err != nil {
		return err
	}
	a, err := agent.Start(ctx, cfg, log, reg, reg, sink)
	if err != nil {
		return err
	}
	return a.Wait()
}
