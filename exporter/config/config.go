// Package config defines flow-exporter's configuration: a typed struct filled by viper from flags,
// FLOWLENS_ environment variables and an optional YAML file (in that order of precedence), then validated.
package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/settings"
)

// Config is everything flow-exporter can be told.
type Config struct {
	// Scope is "netns" (one network namespace: the exporter's own, or Netns) or "host" (every namespace;
	// each record carries its namespace). Default netns, as a pod sidecar runs.
	Scope string `mapstructure:"scope"`
	// Netns selects the namespace for scope netns: a path (/var/run/netns/x, /proc/PID/ns/net) or a pid.
	// Empty means the exporter's own namespace.
	Netns string `mapstructure:"netns"`
	// Output is where records go: "collector" (batches to flow-collector, see Collector), "stdout" (one
	// JSON object per line) or "discard" (count only, for benchmarks).
	Output string `mapstructure:"output"`
	// Collector says how to reach flow-collector when Output is "collector".
	Collector Collector `mapstructure:"collector"`
	// FlushInterval is how often every open connection the exporter tracks is reported as an interim (ACTIVE)
	// record. Default 60s.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
	// CloseGrace is how long a final record waits for a late RST to amend its close reason. Default 200ms.
	CloseGrace time.Duration `mapstructure:"close_grace"`
	// MaxConnections sizes the kernel's flows map: how many connections can be open at once and still be
	// reported. 0 picks 65536 for scope netns and 262144 for scope host (about 100 B each, preallocated).
	MaxConnections uint32 `mapstructure:"max_connections"`
	// RingBufferBytes sizes the kernel-to-exporter ring buffer (power of two, >= 4096). Default 2 MiB:
	// about 13,800 records of 152 B, half a second of a host making 14,000 connections/s, both ends; the
	// reader is woken at a quarter full. Its data pages are mapped twice, so it costs twice its size in RSS.
	RingBufferBytes uint32 `mapstructure:"ring_buffer_bytes"`
	// QueueRecords bounds the records waiting for the output; beyond it records are dropped and counted.
	// Default 16384.
	QueueRecords int `mapstructure:"queue_records"`
	// MetricsAddr is where /metrics is served; empty disables it. Default 127.0.0.1:9477.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `mapstructure:"log_level"`
	// File is the config file Load read, if any (set by Load, not a setting).
	File string `mapstructure:"-"`
	// Workload is the identity stamped on every record as local_workload. In a pod the injector sets it
	// from the downward API (FLOWLENS_WORKLOAD_NAME, _NAMESPACE, _POD, _POD_UID, _NODE, _CLUSTER).
	// Workload.Node defaults to $NODE_NAME, then (not with Kubernetes) the host name.
	Workload flow.Workload `mapstructure:"workload"`
	// Kubernetes names each record's local workload by its pod, for scope host on a Kubernetes node
	// (DaemonSet mode): see exporter/podid. It watches the pods of node Workload.Node, which must be set
	// (workload.node, or NODE_NAME from the downward API's spec.nodeName). Default false.
	Kubernetes bool `mapstructure:"kubernetes"`
	// Kubeconfig is the kubeconfig file for Kubernetes; empty: the pod's service account.
	Kubeconfig string `mapstructure:"kubeconfig"`
}

// Collector is the delivery to flow-collector.
type Collector struct {
	// Transport is auto (the selector's policy), grpc, https or udp (pinned). Editing it in the config
	// file switches at run time.
	Transport string `mapstructure:"transport"`
	// GRPCAddr is host:port of the collector's gRPC ingest; empty: no gRPC.
	GRPCAddr string `mapstructure:"grpc_addr"`
	// HTTPSURL is the collector's batch endpoint, https://host:port/v1/batches; empty: no HTTPS.
	HTTPSURL string `mapstructure:"https_url"`
	// UDPAddr is host:port of the collector's UDP ingest; empty: no UDP.
	UDPAddr string `mapstructure:"udp_addr"`
	// UDPKeyFile holds the shared HMAC key that signs every UDP datagram (required with UDPAddr).
	UDPKeyFile string `mapstructure:"udp_key_file"`
	// CAFile verifies the collector's certificate (default: the system roots). CertFile and KeyFile are the
	// exporter's client certificate, for collectors that require mTLS.
	CAFile string `mapstructure:"ca_file"`
	// CAPEM is the same CA as text, for sidecars: flowlens-injector hands it to them in
	// FLOWLENS_COLLECTOR_CA_PEM, as no Secret of the collector's namespace can be mounted in theirs.
	CAPEM    string `mapstructure:"ca_pem"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// Insecure sends gRPC without TLS: for a collector on loopback only.
	Insecure bool `mapstructure:"insecure"`
	// ExporterID names this exporter to the collector; a random suffix per run keeps (id, seq) unique
	// across restarts. Default: the node name.
	ExporterID string `mapstructure:"exporter_id"`
	// BatchRecords is the most records in one batch. Default 512.
	BatchRecords int `mapstructure:"batch_records"`
	// BufferBatches and BufferBytes bound the batches waiting for an answer; beyond either the oldest are
	// dropped and counted. Defaults 1024 and 16 MiB: about 500,000 records, minutes of a busy host.
	BufferBatches int `mapstructure:"buffer_batches"`
	BufferBytes   int `mapstructure:"buffer_bytes"`
	// SendTimeout bounds one batch's wait for its answer. Default 5s.
	SendTimeout time.Duration `mapstructure:"send_timeout"`
	// FailAfter consecutive failures demote a transport until ProbeInterval has passed. Defaults 3, 30s.
	FailAfter     int           `mapstructure:"fail_after"`
	ProbeInterval time.Duration `mapstructure:"probe_interval"`
}

var options = []settings.Option{
	settings.O("scope", "scope", "netns", "netns (one network namespace) or host (all of them)"),
	settings.O("netns", "netns", "", "namespace for --scope=netns: path or pid (default: the exporter's own)"),
	settings.O("output", "output", "stdout", "collector, stdout (JSON lines) or discard"),
	settings.O("collector.transport", "collector-transport", "auto", "auto, grpc, https or udp"),
	settings.O("collector.grpc_addr", "collector-grpc-addr", "", "collector gRPC address host:port"),
	settings.O("collector.https_url", "collector-https-url", "", "collector HTTPS batch URL"),
	settings.O("collector.udp_addr", "collector-udp-addr", "", "collector UDP address host:port"),
	settings.O("collector.udp_key_file", "collector-udp-key-file", "", "file with the UDP HMAC key"),
	settings.O("collector.ca_file", "collector-ca-file", "", "CA that signed the collector's certificate"),
	settings.O("collector.ca_pem", "collector-ca-pem", "", "the same CA as PEM text (set by flowlens-injector)"),
	settings.O("collector.cert_file", "collector-cert-file", "", "client certificate for mTLS"),
	settings.O("collector.key_file", "collector-key-file", "", "client key for mTLS"),
	settings.O("collector.insecure", "collector-insecure", false, "gRPC without TLS (loopback only)"),
	settings.O("collector.exporter_id", "exporter-id", "", "this exporter's name (default: node name)"),
	settings.O("collector.batch_records", "batch-records", 512, "records per batch"),
	settings.O("collector.buffer_batches", "buffer-batches", 1024, "batches held for the collector"),
	settings.O("collector.buffer_bytes", "buffer-bytes", 16<<20, "bytes held for the collector"),
	settings.O("collector.send_timeout", "send-timeout", 5*time.Second, "wait for one batch's answer"),
	settings.O("collector.fail_after", "fail-after", 3, "consecutive failures that demote a transport"),
	settings.O("collector.probe_interval", "probe-interval", 30*time.Second, "when a demoted transport is tried again"),
	settings.O("flush_interval", "flush-interval", 60*time.Second, "report every open connection as an interim record this often"),
	settings.O("close_grace", "close-grace", 200*time.Millisecond, "how long a final record waits for a late RST"),
	settings.O("max_connections", "max-connections", uint32(0), "open connections tracked in the kernel (0: 65536 netns, 262144 host)"),
	settings.O("ring_buffer_bytes", "ring-buffer-bytes", uint32(2<<20), "kernel ring buffer size in bytes (power of two)"),
	settings.O("queue_records", "queue-records", 16384, "records buffered for the output before drops"),
	settings.O("metrics_addr", "metrics-addr", "127.0.0.1:9477", "address for /metrics (empty: off)"),
	settings.O("log_level", "log-level", "info", "debug, info, warn or error"),
	settings.O("workload.name", "workload-name", "", "local workload name stamped on every record"),
	settings.O("workload.namespace", "workload-namespace", "", "local workload's Kubernetes namespace"),
	settings.O("workload.pod", "workload-pod", "", "local pod name"),
	settings.O("workload.pod_uid", "workload-pod-uid", "", "local pod UID"),
	settings.O("workload.node", "workload-node", "", "node or host name (default: hostname)"),
	settings.O("workload.cluster", "workload-cluster", "", "cluster name"),
	settings.O("kubernetes", "kubernetes", false, "scope host on a Kubernetes node: name each record's local workload by its pod"),
	settings.O("kubeconfig", "kubeconfig", "", "kubeconfig for --kubernetes (default: the pod's service account)"),
}

// Load reads the configuration from args (without the program name), the environment and the file
// named by --config. It returns pflag.ErrHelp when --help was asked for.
func Load(args []string) (Config, error) {
	var c Config
	file, err := settings.Load("flow-exporter", args, options, &c)
	if err != nil {
		return Config{}, err
	}
	c.File = file
	c.applyDefaults()
	return c, c.Validate()
}

func (c Collector) validate() []error {
	var errs []error
	switch c.Transport {
	case "auto", "grpc", "https", "udp":
	default:
		errs = append(errs, fmt.Errorf("collector.transport %q: want auto, grpc, https or udp", c.Transport))
	}
	if c.GRPCAddr == "" && c.HTTPSURL == "" && c.UDPAddr == "" {
		errs = append(errs, errors.New("output collector: set at least one of collector.grpc_addr, https_url, udp_addr"))
	}
	if c.UDPAddr != "" && c.UDPKeyFile == "" {
		errs = append(errs, errors.New("collector.udp_addr needs collector.udp_key_file: datagrams are signed"))
	}
	if c.CAFile != "" && c.CAPEM != "" {
		errs = append(errs, errors.New("collector.ca_file and collector.ca_pem: set one"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("collector.cert_file and key_file go together"))
	}
	if c.BatchRecords < 1 || c.BufferBatches < 1 || c.BufferBytes < 1<<10 || c.FailAfter < 1 {
		errs = append(errs, errors.New("collector batch_records, buffer_batches, fail_after must be >= 1 and buffer_bytes >= 1024"))
	}
	if c.SendTimeout <= 0 || c.ProbeInterval <= 0 {
		errs = append(errs, errors.New("collector send_timeout and probe_interval must be positive"))
	}
	return errs
}

func (c *Config) applyDefaults() {
	if c.MaxConnections == 0 {
		c.MaxConnections = 65536
		if c.Scope == "host" {
			c.MaxConnections = 262144
		}
	}
	if c.Workload.Node == "" {
		c.Workload.Node = os.Getenv("NODE_NAME")
	}
	// With Kubernetes the node name selects the pods to watch: a host name that differs from the node's
	// name would silently watch none, so it must be given.
	if c.Workload.Node == "" && !c.Kubernetes {
		c.Workload.Node, _ = os.Hostname()
	}
	if c.Collector.ExporterID == "" {
		c.Collector.ExporterID = c.Workload.Node
		if c.Workload.Pod != "" {
			c.Collector.ExporterID = c.Workload.Namespace + "/" + c.Workload.Pod
		}
	}
}

// Validate says everything that is wrong with c at once.
func (c Config) Validate() error {
	var errs []error
	switch c.Scope {
	case "netns":
	case "host":
		if c.Netns != "" {
			errs = append(errs, errors.New("netns: only for scope netns"))
		}
	default:
		errs = append(errs, fmt.Errorf("scope %q: want netns or host", c.Scope))
	}
	if c.Kubernetes {
		errs = append(errs, c.validateKubernetes()...)
	} else if c.Kubeconfig != "" {
		errs = append(errs, errors.New("kubeconfig: only with kubernetes"))
	}
	switch c.Output {
	case "stdout", "discard":
	case "collector":
		errs = append(errs, c.Collector.validate()...)
	default:
		errs = append(errs, fmt.Errorf("output %q: want collector, stdout or discard", c.Output))
	}
	if c.FlushInterval < time.Second {
		errs = append(errs, fmt.Errorf("flush_interval %v: want at least 1s", c.FlushInterval))
	}
	if c.CloseGrace <= 0 || c.CloseGrace > 10*time.Second {
		errs = append(errs, fmt.Errorf("close_grace %v: want more than 0 and at most 10s", c.CloseGrace))
	}
	if r := c.RingBufferBytes; r < 4096 || r&(r-1) != 0 {
		errs = append(errs, fmt.Errorf("ring_buffer_bytes %d: want a power of two of at least 4096", r))
	}
	if c.MaxConnections < 64 {
		errs = append(errs, fmt.Errorf("max_connections %d: want at least 64", c.MaxConnections))
	}
	if c.QueueRecords < 1 {
		errs = append(errs, fmt.Errorf("queue_records %d: want at least 1", c.QueueRecords))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

func (c Config) validateKubernetes() []error {
	var errs []error
	if c.Scope != "host" {
		errs = append(errs, errors.New("kubernetes: needs scope host (a sidecar's workload comes from its pod's downward API)"))
	}
	if c.Workload.Node == "" {
		errs = append(errs, errors.New("kubernetes: the node name is unknown: set workload.node or NODE_NAME (downward API spec.nodeName)"))
	}
	w := c.Workload
	if w.Name != "" || w.Namespace != "" || w.Pod != "" || w.PodUID != "" {
		errs = append(errs, errors.New("kubernetes: workload name, namespace, pod and pod_uid name one workload for every record; "+
			"with kubernetes each record's pod is named: leave them unset"))
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			errs = append(errs, fmt.Errorf("kubeconfig: %w", err))
		}
	}
	return errs
}

// Watch calls onChange with the configuration loaded again from args whenever the file it names changes,
// until ctx ends. A configuration that fails to load or validate comes with its error. It watches the
// file's directory, since editors and Kubernetes ConfigMaps replace files rather than write them.
func Watch(ctx context.Context, args []string, file string, onChange func(Config, error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		w.Close()
		return fmt.Errorf("watch config %s: %w", file, err)
	}
	go func() {
		defer w.Close()
		var settle <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Clean(ev.Name) == filepath.Clean(file) || filepath.Base(ev.Name) == "..data" {
					settle = time.After(100 * time.Millisecond) // one reload for a burst of events
				}
			case <-w.Errors:
			case <-settle:
				onChange(Load(args))
			}
		}
	}()
	return nil
}
