// Command flow-collector receives flow batches from flow-exporters. See the README for its configuration.
package main

import (
	"context"
	"os"

	"github.com/flowlens/flowlens/collector/app"
	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/internal/daemon"
)

func main() { daemon.Main("flow-collector", run) }

func run() error {
	cfg, err := config.Load(os.Args[1:])
	if err != nil {
		return err
	}
	env, err := daemon.Setup("flow-collector", cfg.LogLevel)
	if err != nil {
		return err
	}
	defer env.Close()
	ctx, log, reg := env.Ctx, env.Log, env.Reg
	a, err := app.Start(cfg, log, reg, reg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	a.Stop(sctx)
	log.Info("flow-collector stopped")
	return nil
}
