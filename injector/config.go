// Package injector is flowlens-injector: a mutating admission webhook that adds the flow-exporter
// sidecar to pods that opted in, by namespace label or pod annotation.
package injector

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/flowlens/flowlens/internal/settings"
)

// Config is everything flowlens-injector can be told.
type Config struct {
	// ListenAddr is where the webhook serves HTTPS. Default :8443.
	ListenAddr string `mapstructure:"listen_addr"`
	// CertFile and KeyFile are the serving certificate; they are re-read when they change on disk, so a
	// rotated Secret takes effect without a restart.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// MetricsAddr serves /metrics over plain HTTP; empty disables it. Default :9479.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `mapstructure:"log_level"`
	// Cluster is stamped on every injected exporter's records as the workload's cluster.
	Cluster string `mapstructure:"cluster"`
	// Sidecar is the container added to each pod.
	Sidecar Sidecar `mapstructure:"sidecar"`
	// Collector is passed to every sidecar as its FLOWLENS_COLLECTOR_* settings.
	Collector Collector `mapstructure:"collector"`
}

// Sidecar says what the injected container is.
type Sidecar struct {
	// Image is the flow-exporter image (required).
	Image string `mapstructure:"image"`
	// PullPolicy is Always, IfNotPresent or Never. Default IfNotPresent.
	PullPolicy string `mapstructure:"pull_policy"`
	// Name is the container's name, which is also how an injected pod is recognised. Default
	// flowlens-exporter.
	Name string `mapstructure:"name"`
	// Native makes the sidecar a Kubernetes native sidecar: the first init container, with restartPolicy
	// Always. It then starts before the pod's other containers (so their first connections are seen)
	// and does not keep a Job's pod running after its work is done. It needs Kubernetes 1.29 or later
	// (the SidecarContainers feature): an older API server drops the restartPolicy and the pod waits
	// forever on an init container that never exits, so set it false there. Default true.
	Native bool `mapstructure:"native"`
	// Requests and limits. Defaults 10m/32Mi and 100m/64Mi: the exporter's measured RSS is 25-37 MiB and
	// its CPU a fraction of a percent of the workload's (README "Benchmarks").
	CPURequest    string `mapstructure:"cpu_request"`
	MemoryRequest string `mapstructure:"memory_request"`
	CPULimit      string `mapstructure:"cpu_limit"`
	MemoryLimit   string `mapstructure:"memory_limit"`
}

// Collector is the subset of flow-exporter's collector settings that need no file in the pod.
type Collector struct {
	Transport string `mapstructure:"transport"`
	GRPCAddr  string `mapstructure:"grpc_addr"`
	HTTPSURL  string `mapstructure:"https_url"`
	Insecure  bool   `mapstructure:"insecure"`
	// CAFile is the CA that signed the collector's certificate, for a collector whose certificate the
	// sidecars' system roots do not trust (a cluster-internal CA). Its PEM goes into every sidecar's
	// FLOWLENS_COLLECTOR_CA_PEM; the file is re-read when it changes.
	CAFile string `mapstructure:"ca_file"`
	// CAPEM is CAFile's content as of the admission being answered; the webhook fills it.
	CAPEM string `mapstructure:"-"`
}

var options = []settings.Option{
	settings.O("listen_addr", "listen-addr", ":8443", "HTTPS address of the webhook"),
	settings.O("cert_file", "cert-file", "/etc/flowlens-injector/tls/tls.crt", "serving certificate (re-read on change)"),
	settings.O("key_file", "key-file", "/etc/flowlens-injector/tls/tls.key", "serving key (re-read on change)"),
	settings.O("metrics_addr", "metrics-addr", ":9479", "address for /metrics (empty: off)"),
	settings.O("log_level", "log-level", "info", "debug, info, warn or error"),
	settings.O("cluster", "cluster", "", "cluster name stamped on the sidecars' records"),
	settings.O("sidecar.image", "sidecar-image", "", "flow-exporter image to inject (required)"),
	settings.O("sidecar.pull_policy", "sidecar-pull-policy", "IfNotPresent", "Always, IfNotPresent or Never"),
	settings.O("sidecar.name", "sidecar-name", "flowlens-exporter", "injected container name"),
	settings.O("sidecar.native", "sidecar-native", true, "inject a native sidecar (init container, restartPolicy Always; Kubernetes >= 1.29)"),
	settings.O("sidecar.cpu_request", "sidecar-cpu-request", "10m", "sidecar CPU request"),
	settings.O("sidecar.memory_request", "sidecar-memory-request", "32Mi", "sidecar memory request"),
	settings.O("sidecar.cpu_limit", "sidecar-cpu-limit", "100m", "sidecar CPU limit"),
	settings.O("sidecar.memory_limit", "sidecar-memory-limit", "64Mi", "sidecar memory limit"),
	settings.O("collector.transport", "collector-transport", "auto", "sidecar transport: auto, grpc or https"),
	settings.O("collector.grpc_addr", "collector-grpc-addr", "", "collector gRPC address host:port"),
	settings.O("collector.https_url", "collector-https-url", "", "collector HTTPS batch URL"),
	settings.O("collector.insecure", "collector-insecure", false, "sidecars send gRPC without TLS"),
	settings.O("collector.ca_file", "collector-ca-file", "", "CA of the collector's certificate, handed to sidecars (re-read on change)"),
}

// Load reads the configuration from args (without the program name), FLOWLENS_ environment variables
// and the file named by --config. It returns pflag.ErrHelp when --help was asked for.
func Load(args []string) (Config, error) {
	var c Config
	if _, err := settings.Load("flowlens-injector", args, options, &c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate says everything that is wrong with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.ListenAddr == "" || c.CertFile == "" || c.KeyFile == "" {
		errs = append(errs, errors.New("listen_addr, cert_file and key_file are required: the API server only calls webhooks over TLS"))
	}
	if c.Sidecar.Image == "" {
		errs = append(errs, errors.New("sidecar.image is required"))
	}
	if c.Sidecar.Name == "" {
		errs = append(errs, errors.New("sidecar.name is required"))
	}
	switch c.Sidecar.PullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		errs = append(errs, fmt.Errorf("sidecar.pull_policy %q: want Always, IfNotPresent or Never", c.Sidecar.PullPolicy))
	}
	for k, v := range map[string]string{
		"cpu_request": c.Sidecar.CPURequest, "memory_request": c.Sidecar.MemoryRequest,
		"cpu_limit": c.Sidecar.CPULimit, "memory_limit": c.Sidecar.MemoryLimit,
	} {
		if _, err := resource.ParseQuantity(v); err != nil {
			errs = append(errs, fmt.Errorf("sidecar.%s %q: %w", k, v, err))
		}
	}
	switch c.Collector.Transport {
	case "auto", "grpc", "https":
	default:
		// udp needs the HMAC key file in the pod: not something the injector can mount yet.
		errs = append(errs, fmt.Errorf("collector.transport %q: want auto, grpc or https", c.Collector.Transport))
	}
	if c.Collector.GRPCAddr == "" && c.Collector.HTTPSURL == "" {
		errs = append(errs, errors.New("set collector.grpc_addr or collector.https_url: the sidecars need somewhere to send"))
	}
	return errors.Join(errs...)
}
