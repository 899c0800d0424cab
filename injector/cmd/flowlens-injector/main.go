// Command flowlens-injector is the mutating admission webhook that adds the flow-exporter sidecar to
// opted-in pods. See the README for its configuration.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/flowlens/flowlens/injector"
	"github.com/flowlens/flowlens/internal/daemon"
)

func main() { daemon.Main("flowlens-injector", run) }

func run() error {
	cfg, err := injector.Load(os.Args[1:])
	if err != nil {
		return err
	}
	env, err := daemon.Setup("flowlens-injector", cfg.LogLevel)
	if err != nil {
		return err
	}
	defer env.Close()
	ctx, log, reg := env.Ctx, env.Log, env.Reg
	s, err := injector.Start(cfg, log, reg, reg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-s.Failed():
		s.Stop(context.Background())
		return fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Stop(sctx)
	log.Info("flowlens-injector stopped")
	return nil
}
