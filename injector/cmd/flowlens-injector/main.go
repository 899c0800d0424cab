// Command flowlens-injector is the mutating admission webhook that adds the flow-exporter sidecar to
// opted-in pods. See the README for its configuration.
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

	"github.com/flowlens/flowlens/injector"
	"github.com/flowlens/flowlens/internal/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flowlens-injector:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := injector.Load(os.Args[1:])
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
	log = log.With(zap.String("component", "flowlens-injector"))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
