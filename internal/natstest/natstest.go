// Package natstest starts a real nats-server with JetStream for tests: on a 127.0.0.1 port chosen at
// run time, its store in t.TempDir(), stopped at the test's cleanup. The binary comes from PATH or
// $(go env GOPATH)/bin, where scripts/install-nats-server.sh (run by `make test`) puts it. When it is
// missing the test fails under CI=true, naming the script, and is skipped elsewhere.
package natstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// InstallScript is what installs the binary.
const InstallScript = "scripts/install-nats-server.sh"

// Server is one nats-server process. Stop and Start may be called repeatedly; the port and the store
// stay the same, so a restarted server keeps its streams.
type Server struct {
	t     testing.TB
	bin   string
	dir   string // store and ports file live here
	port  int
	cmd   *exec.Cmd
	done  chan struct{}
	log   bytes.Buffer // the server's output, shown when a test fails
	extra []string
}

// Binary returns the nats-server path, failing (CI=true) or skipping the test when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "nats-server")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("nats-server not found in PATH or GOPATH/bin: run %s (make test does)", InstallScript)
	}
	t.Skipf("nats-server not found in PATH or GOPATH/bin: run %s", InstallScript)
	return ""
}

// Start starts a server with JetStream and registers its stop with t.Cleanup. extra are more
// command-line options for nats-server.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), dir: t.TempDir(), extra: extra}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", s.log.String())
		}
	})
	s.Start()
	return s
}

// Start (re)starts a stopped server on its port, with its store. The first start lets the server pick
// the port (-p -1) and reads it from the ports file, so no two tests race for one.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		return
	}
	portsDir := filepath.Join(s.dir, "ports")
	if err := os.MkdirAll(portsDir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	port := "-1"
	if s.port != 0 {
		port = strconv.Itoa(s.port)
	}
	args := append([]string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", filepath.Join(s.dir, "store"),
		"--ports_file_dir", portsDir, "-n", "natstest"}, s.extra...)
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = &s.log, &s.log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()

	portsFile := filepath.Join(portsDir, fmt.Sprintf("%s_%d.ports", filepath.Base(s.bin), cmd.Process.Pid))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if p := readPort(portsFile); p != 0 {
			s.port = p
			break
		}
		select {
		case <-s.done:
			s.cmd = nil
			s.t.Fatalf("nats-server exited at start:\n%s", s.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("nats-server wrote no ports file in 20s:\n%s", s.log.String())
		}
	}
	// The ports file is written once the listener is up; a dial confirms it.
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("nats-server not accepting on %s: %v\n%s", s.Addr(), err, s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPort(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var ports struct{ Nats []string }
	if json.Unmarshal(b, &ports) != nil || len(ports.Nats) == 0 {
		return 0
	}
	u := ports.Nats[0] // nats://127.0.0.1:PORT
	i := strings.LastIndexByte(u, ':')
	p, _ := strconv.Atoi(u[i+1:])
	return p
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Addr is host:port of the client listener.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the nats:// URL clients connect to.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Connect opens a client connection closed at the test's cleanup, and its JetStream context.
func (s *Server) Connect(t testing.TB, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
