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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/agent"
	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/logging"
	"github.com/flowlens/flowlens/internal/output"
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
	m, err := metrics.New(reg, log)
	if err != nil {
		return err
	}

	var sink output.Sink
	if cfg.Output == "collector" {
		ship, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, reg, log)
		if err != nil {
			return err
		}
		defer ship.Close(10 * time.Second)
		sink = ship
		if cfg.File != "" {
			// Editing collector.transport in the file switches the transport without a restart.
			err := config.Watch(ctx, os.Args[1:], cfg.File, func(c config.Config, err error) {
				if err != nil {
					log.Error("config change ignored", zap.Error(err))
					return
				}
				log.Info("config reloaded", zap.String("collector.transport", c.Collector.Transport))
				ship.Pin(c.Collector.Transport)
			})
			if err != nil {
				return err
			}
		}
	} else if sink, err = output.New(cfg.Output, os.Stdout); err != nil {
		return err
	}
	a, err := agent.Start(ctx, cfg, log, m, reg, sink)
	if err != nil {
		return err
	}
	return a.Wait()
}
