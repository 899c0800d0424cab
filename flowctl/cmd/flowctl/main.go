// Command flowctl queries a flowlens collector's API. See the README or `flowctl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flowlens/flowlens/flowctl/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], &cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
