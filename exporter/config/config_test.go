package config

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("scope: host\nflush_interval: 30s\nqueue_records: 10\nworkload:\n  name: from-file\n  cluster: c1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOWLENS_QUEUE_RECORDS", "20")
	t.Setenv("FLOWLENS_WORKLOAD_NAMESPACE", "shop")
	c, err := Load([]string{"--config", file, "--flush-interval", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Scope != "host" || c.FlushInterval != 5*time.Second || c.QueueRecords != 20 {
		t.Errorf("scope %q flush %v queue %d: want host (file), 5s (flag over file), 20 (env over file)", c.Scope, c.FlushInterval, c.QueueRecords)
	}
	if c.Workload.Name != "from-file" || c.Workload.Namespace != "shop" || c.Workload.Cluster != "c1" {
		t.Errorf("workload %+v", c.Workload)
	}
	if c.MaxConnections != 262144 {
		t.Errorf("max_connections %d: want the host default 262144", c.MaxConnections)
	}
	if c.CloseGrace != 200*time.Millisecond || c.Output != "stdout" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		args []string
		want string // substring of the error; "" for valid
	}{
		{nil, ""},
		{[]string{"--scope", "pod"}, `scope "pod"`},
		{[]string{"--scope", "host", "--netns", "1"}, "only for scope netns"},
		{[]string{"--output", "kafka"}, `output "kafka"`},
		{[]string{"--output", "collector"}, "at least one of"},
		{[]string{"--output", "collector", "--collector-grpc-addr", "h:1", "--collector-transport", "carrier-pigeon"}, "collector.transport"},
		{[]string{"--output", "collector", "--collector-udp-addr", "h:1"}, "udp_key_file"},
		{[]string{"--output", "collector", "--collector-grpc-addr", "h:1", "--collector-cert-file", "c"}, "go together"},
		{[]string{"--output", "collector", "--collector-grpc-addr", "h:1"}, ""},
		{[]string{"--flush-interval", "10ms"}, "flush_interval"},
		{[]string{"--ring-buffer-bytes", "5000"}, "power of two"},
		{[]string{"--max-connections", "3"}, "max_connections 3"},
		{[]string{"--log-level", "loud"}, "log_level"},
		{[]string{"--close-grace", "0s"}, "close_grace"},
	}
	for _, tt := range tests {
		_, err := Load(tt.args)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: error %v, want it to mention %q", tt.args, err, tt.want)
		}
	}
}

// TestWatch: editing the file makes Watch call back with the new configuration; a broken edit comes with
// its error.
func TestWatch(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(file, []byte("output: collector\ncollector:\n  grpc_addr: h:1\n  transport: auto\n"), 0o600)
	args := []string{"--config", file}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type change struct {
		c   Config
		err error
	}
	changes := make(chan change, 4)
	if err := Watch(ctx, args, file, func(c Config, err error) { changes <- change{c, err} }); err != nil {
		t.Fatal(err)
	}
	next := func() change {
		select {
		case ch := <-changes:
			return ch
		case <-time.After(5 * time.Second):
			t.Fatal("no callback after the edit")
		}
		return change{}
	}
	os.WriteFile(file, []byte("output: collector\ncollector:\n  grpc_addr: h:1\n  transport: https\n"), 0o600)
	if ch := next(); ch.err != nil || ch.c.Collector.Transport != "https" {
		t.Fatalf("after the edit: transport %q, error %v", ch.c.Collector.Transport, ch.err)
	}
	os.WriteFile(file, []byte("output: collector\ncollector:\n  grpc_addr: h:1\n  transport: pigeon\n"), 0o600)
	if ch := next(); ch.err == nil {
		t.Fatal("a broken edit came without an error")
	}
}
