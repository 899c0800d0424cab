package transport

import "fmt"

// Instance is what the selector knows about this exporter and its path to the collector. The exporter
// reads it at start and again at run time.
type Instance struct {
	CPULimit    float64 // cores the cgroup allows; 0: unlimited
	MemoryLimit int64   // bytes the cgroup allows; 0: unlimited
	FlowRate    float64 // records per second, recently observed
	Proxy       bool    // an HTTPS proxy is configured: the path likely passes HTTPS only
	Hint        string  // the collector's preferred transport, from its last ack; "" if none
	// Usable says, per configured transport, whether it may be tried now (configured, and not demoted).
	Usable map[string]bool
}

// Thresholds below which an instance counts as constrained, and the flow rate above which acked delivery
// costs too much: UDP then, where it is configured.
const (
	constrainedCPU    = 0.25     // cores
	constrainedMemory = 64 << 20 // bytes
	highFlowRate      = 50_000.0 // records/s
)

// Choose is the transport policy. The first rule that applies wins:
//
//	| # | condition                                              | transport                 |
//	|---|--------------------------------------------------------|---------------------------|
//	| 1 | pinned in the config                                   | the pinned one, always    |
//	| 2 | the collector hints at a usable transport              | the hinted one            |
//	| 3 | CPU < 0.25 cores, memory < 64 MiB or > 50k flows/s     | udp, if usable            |
//	| 4 | an HTTPS proxy is configured                           | https, if usable          |
//	| 5 | -                                                      | grpc, if usable           |
//	| 6 | -                                                      | https, if usable          |
//	| 7 | -                                                      | udp, if usable            |
//	| 8 | nothing is usable                                      | grpc, to keep trying      |
//
// It returns the transport and the reason, for logs and metrics.
func Choose(pinned string, in Instance) (name, reason string) {
	switch {
	case pinned != "" && pinned != "auto":
		return pinned, "pinned in the config"
	case in.Hint != "" && in.Usable[in.Hint]:
		return in.Hint, "the collector prefers it"
	}
	if in.Usable["udp"] {
		switch {
		case in.CPULimit > 0 && in.CPULimit < constrainedCPU:
			return "udp", fmt.Sprintf("constrained instance: %.2f cores", in.CPULimit)
		case in.MemoryLimit > 0 && in.MemoryLimit < constrainedMemory:
			return "udp", fmt.Sprintf("constrained instance: %d MiB of memory", in.MemoryLimit>>20)
		case in.FlowRate > highFlowRate:
			return "udp", fmt.Sprintf("high flow rate: %.0f flows/s", in.FlowRate)
		}
	}
	if in.Proxy && in.Usable["https"] {
		return "https", "an HTTPS proxy is configured"
	}
	for _, t := range []string{"grpc", "https", "udp"} {
		if in.Usable[t] {
			return t, "the most reliable transport that works"
		}
	}
	return "grpc", "no transport is usable: retrying the default"
}
