// Command sonar is flowlens's IP-attribution service: it keeps the ownership index (who held which IP
// when) and answers lookups over gRPC and HTTP/JSON. See the README for its configuration.
package main

import (
	"os"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/daemon"
	"github.com/flowlens/flowlens/sonar/config"
)

func main() { daemon.Main("sonar", mainErr) }

func mainErr() error {
	cfg, err := config.Load(os.Args[1:])
	if err != nil {
		return err
	}
	env, err := daemon.Setup("sonar", cfg.LogLevel)
	if err != nil {
		return err
	}
	defer env.Close()
	ctx, log, reg := env.Ctx, env.Log, env.Reg
	err = run(ctx, cfg, log, reg, nil)
	log.Info("sonar stopped", zap.Error(err))
	return err
}
