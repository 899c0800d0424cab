// Command sonar is flowlens's IP-attribution service: it keeps the ownership index (who held which IP
// when) and answers lookups over gRPC and HTTP/JSON. See the README for its configuration.
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

	"github.com/flowlens/flowlens/internal/logging"
	"github.com/flowlens/flowlens/sonar/config"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "sonar:", err)
		os.Exit(1)
	}
}

func mainErr() error {
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
	log = log.With(zap.String("component", "sonar"))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	err = run(ctx, cfg, log, reg, nil)
	log.Info("sonar stopped", zap.Error(err))
	return err
}
