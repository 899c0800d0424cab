// Command flow-exporter reports every TCP connection of its workload (one network namespace) or of its
// host as flow records. See the README for its configuration.
package main

import (
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/agent"
	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/daemon"
	"github.com/flowlens/flowlens/internal/output"
)

func main() { daemon.Main("flow-exporter", run) }

func run() error {
	cfg, err := config.Load(os.Args[1:])
	if err != nil {
		return err
	}
	env, err := daemon.Setup("flow-exporter", cfg.LogLevel)
	if err != nil {
		return err
	}
	defer env.Close()
	ctx, log, reg := env.Ctx, env.Log, env.Reg
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
