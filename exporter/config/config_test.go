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

// TestKubernetes: DaemonSet mode's settings, the node name from NODE_NAME, and what it refuses.
func TestKubernetes(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NODE_NAME", "")
	tests := []struct {
		name     string
		nodeEnv  string
		args     []string
		want     string // substring of the error; "" for valid
		wantNode string
	}{
		{"node from NODE_NAME", "node-a", []string{"--scope", "host", "--kubernetes"}, "", "node-a"},
		{"workload.node over NODE_NAME", "node-a", []string{"--scope", "host", "--kubernetes", "--workload-node", "node-b"}, "", "node-b"},
		{"kubeconfig", "node-a", []string{"--scope", "host", "--kubernetes", "--kubeconfig", kubeconfig}, "", "node-a"},
		{"no node name: the host name is not guessed", "", []string{"--scope", "host", "--kubernetes"}, "node name is unknown", ""},
		{"scope netns", "node-a", []string{"--kubernetes"}, "needs scope host", ""},
		{"one workload for all", "node-a", []string{"--scope", "host", "--kubernetes", "--workload-name", "x"}, "leave them unset", ""},
		{"missing kubeconfig", "node-a", []string{"--scope", "host", "--kubernetes", "--kubeconfig", kubeconfig + ".none"}, "kubeconfig: stat", ""},
		{"kubeconfig without kubernetes", "node-a", []string{"--scope", "host", "--kubeconfig", kubeconfig}, "only with kubernetes", ""},
		{"without kubernetes NODE_NAME still names the node", "node-c", []string{"--scope", "host"}, "", "node-c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", tt.nodeEnv)
			c, err := Load(tt.args)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			case tt.want == "" && c.Workload.Node != tt.wantNode:
				t.Errorf("node %q, want %q", c.Workload.Node, tt.wantNode)
			}
		})
	}
	c, err := Load([]string{"--scope", "host", "--kubernetes", "--workload-node", "n", "--kubeconfig", kubeconfig})
	if err != nil || !c.Kubernetes || c.Kubeconfig != kubeconfig {
		t.Errorf("kubernetes %v kubeconfig %q err %v", c.Kubernetes, c.Kubeconfig, err)
	}
	t.Setenv("FLOWLENS_KUBERNETES", "true")
	t.Setenv("FLOWLENS_SCOPE", "host")
	t.Setenv("NODE_NAME", "node-env")
	if c, err := Load(nil); err != nil || !c.Kubernetes || c.Workload.Node != "node-env" {
		t.Errorf("from the environment: kubernetes %v node %q err %v", c.Kubernetes, c.Workload.Node, err)
	}
}
