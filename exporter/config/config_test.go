package config

import (
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
