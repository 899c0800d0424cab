package app

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/config"
)

// A Start that fails late (the ingest port is taken) stops what it had started: the API listener is
// released and no pipeline or housekeeping goroutine is left running over the closed store.
func TestFailedStartReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	apiAddr := freeAddr(t)
	dir := t.TempDir()
	cfg, err := config.Load([]string{"--insecure", "--grpc-addr", busy.Addr().String(), "--api-addr", apiAddr,
		"--metrics-addr", "", "--data-dir", dir})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if a, err := Start(cfg, zap.NewNop(), reg, reg); err == nil {
		stopCollector(a)
		t.Fatal("started on a port already taken")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start: %v, want address in use", err)
	}
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		t.Fatalf("the API address is still held after the failed start: %v", err)
	}
	ln.Close()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"pipeline.(*Pipeline).Run", "app.(*App).housekeeping"} {
		if strings.Contains(stacks, f) {
			t.Errorf("%s still running after the failed start", f)
		}
	}
	// The data directory is free for the next attempt.
	a := startCollector(t, dir, freeAddr(t))
	stopCollector(a)
}
