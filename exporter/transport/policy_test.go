package transport

import "testing"

func TestChoose(t *testing.T) {
	all := map[string]bool{"grpc": true, "https": true, "udp": true}
	noUDP := map[string]bool{"grpc": true, "https": true}
	tests := []struct {
		name   string
		pinned string
		in     Instance
		want   string
	}{
		{"pinned wins over everything", "udp", Instance{Usable: map[string]bool{}, Hint: "grpc"}, "udp"},
		{"auto is not a pin", "auto", Instance{Usable: all}, "grpc"},
		{"collector hint", "", Instance{Usable: all, Hint: "https"}, "https"},
		{"hint at an unusable transport is ignored", "", Instance{Usable: noUDP, Hint: "udp"}, "grpc"},
		{"small CPU limit", "", Instance{Usable: all, CPULimit: 0.1}, "udp"},
		{"small memory limit", "", Instance{Usable: all, MemoryLimit: 32 << 20}, "udp"},
		{"high flow rate", "", Instance{Usable: all, FlowRate: 80_000}, "udp"},
		{"constrained but no UDP configured", "", Instance{Usable: noUDP, CPULimit: 0.1}, "grpc"},
		{"ample limits stay on gRPC", "", Instance{Usable: all, CPULimit: 2, MemoryLimit: 1 << 30, FlowRate: 100}, "grpc"},
		{"proxy", "", Instance{Usable: all, Proxy: true}, "https"},
		{"gRPC demoted", "", Instance{Usable: map[string]bool{"grpc": false, "https": true, "udp": true}}, "https"},
		{"gRPC and HTTPS demoted", "", Instance{Usable: map[string]bool{"udp": true}}, "udp"},
		{"nothing usable", "", Instance{Usable: map[string]bool{}}, "grpc"},
	}
	for _, tt := range tests {
		got, reason := Choose(tt.pinned, tt.in)
		if got != tt.want || reason == "" {
			t.Errorf("%s: chose %q (%q), want %q", tt.name, got, reason, tt.want)
		}
	}
}
