// Package daemon is what every flowlens binary's main does before and after its own work: report a
// failure and exit, build the logger, a context that the first SIGINT or SIGTERM ends, and the metrics
// registry.
package daemon

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
)

// Main runs run and, if it fails, prints the error after the program's name and exits 1. Asking for
// --help is not a failure.
func Main(name string, run func() error) {
	if err := run(); err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Env is a running binary's logger, signal context and registry. Close releases them.
type Env struct {
	Ctx  context.Context // ends at the first SIGINT or SIGTERM; a second one kills as usual
	Log  *zap.Logger     // JSON to stderr, tagged with the component's name
	Reg  *prometheus.Registry
	stop context.CancelFunc
}

// Setup builds the Env of the binary name, logging at level (debug, info, warn, error).
func Setup(name, level string) (*Env, error) {
	log, err := logging.New(level)
	if err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Once the first signal has begun the orderly shutdown, the default handling comes back.
	context.AfterFunc(ctx, stop)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Env{Ctx: ctx, Log: log.With(zap.String("component", name)), Reg: reg, stop: stop}, nil
}

// Close stops listening for signals and flushes the log.
func (e *Env) Close() {
	e.stop()
	_ = e.Log.Sync() // the component tag shares the logger's core: this flushes it
}
