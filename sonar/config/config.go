// Package config defines sonar's configuration: a typed struct filled by viper from flags, FLOWLENS_
// environment variables and an optional YAML file (internal/settings), then validated.
package config

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/flowlens/flowlens/internal/settings"
	"github.com/flowlens/flowlens/sonar/index"
)

// Config is everything sonar can be told.
type Config struct {
	// GRPCAddr is where the SonarService listens (Report, Lookup, ListRanges). Default 127.0.0.1:9491.
	GRPCAddr string `mapstructure:"grpc_addr"`
	// HTTPAddr serves the HTTP/JSON lookup API, /healthz and (with Metrics) /metrics. Default
	// 127.0.0.1:9492; empty turns it off.
	HTTPAddr string `mapstructure:"http_addr"`
	// CertFile and KeyFile, when set, serve gRPC over TLS 1.3.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// DataDir keeps the index across restarts (snapshot plus claim log); empty keeps it in memory only.
	DataDir string `mapstructure:"data_dir"`
	// SnapshotInterval is how often the index is snapshotted and the claim log restarted. Default 5m.
	SnapshotInterval time.Duration `mapstructure:"snapshot_interval"`
	// CIDRFile is a YAML CIDR table (see sonar/cidrfile), reloaded when it changes; empty: none.
	CIDRFile string `mapstructure:"cidr_file"`
	// MergeGap, MaxAge and MaxRanges bound the index (index.Config): same-owner claims this close
	// merge; ranges that ended longer ago than MaxAge are dropped; past MaxRanges the oldest go first.
	MergeGap  time.Duration `mapstructure:"merge_gap"`
	MaxAge    time.Duration `mapstructure:"max_age"`
	MaxRanges int           `mapstructure:"max_ranges"`
	// ExpireInterval is how often retention runs. Default 1m.
	ExpireInterval time.Duration `mapstructure:"expire_interval"`
	// Metrics serves Prometheus /metrics on the HTTP listener. Default true.
	Metrics bool `mapstructure:"metrics"`
	// Kubeconfig or InCluster turn on the Kubernetes source (pods, services, nodes as claims);
	// Cluster names the cluster in the workloads it claims.
	Kubeconfig string `mapstructure:"kubeconfig"`
	InCluster  bool   `mapstructure:"in_cluster"`
	Cluster    string `mapstructure:"cluster"`
	// KubeResync and KubeResyncLag are the Kubernetes source's resync period and lag (sonar/kube).
	KubeResync    time.Duration `mapstructure:"kube_resync"`
	KubeResyncLag time.Duration `mapstructure:"kube_resync_lag"`
	// NATSURL, when set, makes sonar a fleet replica: it applies every ownership claim the collectors
	// share on the JetStream stream OwnershipStream (collector/fleet/ownership) to its index.
	NATSURL         string `mapstructure:"nats_url"`
	OwnershipStream string `mapstructure:"ownership_stream"`
	// KubeEventLag is how far behind its arrival a watch event extends a range (sonar/kube EventLag).
	KubeEventLag time.Duration `mapstructure:"kube_event_lag"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `mapstructure:"log_level"`
	// ShutdownTimeout bounds the graceful stop of the listeners. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

var options = []settings.Option{
	settings.O("grpc_addr", "grpc-addr", "127.0.0.1:9491", "gRPC SonarService address"),
	settings.O("http_addr", "http-addr", "127.0.0.1:9492", "HTTP/JSON API, /healthz and /metrics address (empty: off)"),
	settings.O("cert_file", "cert-file", "", "TLS certificate for gRPC (empty: plaintext)"),
	settings.O("key_file", "key-file", "", "TLS key for gRPC"),
	settings.O("data_dir", "data-dir", "", "directory that keeps the index across restarts (empty: memory only)"),
	settings.O("snapshot_interval", "snapshot-interval", 5*time.Minute, "how often the index is snapshotted"),
	settings.O("cidr_file", "cidr-file", "", "YAML CIDR table, reloaded on change (empty: none)"),
	settings.O("merge_gap", "merge-gap", 30*time.Second, "same-owner claims this close merge into one range"),
	settings.O("max_age", "max-age", 24*time.Hour, "ranges that ended longer ago are dropped"),
	settings.O("max_ranges", "max-ranges", 4<<20, "ranges held at most; the oldest go first"),
	settings.O("expire_interval", "expire-interval", time.Minute, "how often retention runs"),
	settings.O("metrics", "metrics", true, "serve /metrics on the HTTP listener"),
	settings.O("kubeconfig", "kubeconfig", "", "kubeconfig file: claims from the cluster's pods, services and nodes"),
	settings.O("in_cluster", "in-cluster", false, "use the in-cluster service account for the Kubernetes source"),
	settings.O("cluster", "cluster", "", "cluster name in the workloads the Kubernetes source claims"),
	settings.O("kube_resync", "kube-resync", 30*time.Second, "how often the Kubernetes source re-observes its caches"),
	settings.O("kube_resync_lag", "kube-resync-lag", 60*time.Second, "how far behind the tick a resync extends ranges"),
	settings.O("kube_event_lag", "kube-event-lag", 15*time.Second, "how far behind its arrival a watch event extends a range"),
	settings.O("nats_url", "nats-url", "", "NATS server whose ownership stream sonar applies (fleet mode; empty: off)"),
	settings.O("ownership_stream", "ownership-stream", "FLOWLENS_OWNERSHIP", "JetStream stream of ownership claims"),
	settings.O("log_level", "log-level", "info", "debug, info, warn or error"),
	settings.O("shutdown_timeout", "shutdown-timeout", 10*time.Second, "graceful stop of the listeners"),
}

// Load reads the configuration from args, the environment and the file named by --config.
func Load(args []string) (Config, error) {
	var c Config
	if _, err := settings.Load("sonar", args, options, &c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Index is the index configuration the settings describe.
func (c Config) Index() index.Config {
	return index.Config{MergeGap: c.MergeGap, MaxAge: c.MaxAge, MaxRanges: c.MaxRanges}
}

// Validate says everything that is wrong with c at once.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		errs = append(errs, fmt.Errorf("grpc_addr %q: %w", c.GRPCAddr, err))
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("http_addr %q: %w", c.HTTPAddr, err))
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"merge_gap", c.MergeGap}, {"max_age", c.MaxAge}, {"expire_interval", c.ExpireInterval}, {"snapshot_interval", c.SnapshotInterval}, {"shutdown_timeout", c.ShutdownTimeout},
		{"kube_resync", c.KubeResync}, {"kube_resync_lag", c.KubeResyncLag}, {"kube_event_lag", c.KubeEventLag}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want > 0", d.name, d.v))
		}
	}
	if c.MaxRanges <= 0 {
		errs = append(errs, fmt.Errorf("max_ranges %d: want > 0", c.MaxRanges))
	}
	if c.Kubeconfig != "" && c.InCluster {
		errs = append(errs, errors.New("kubeconfig and in_cluster: choose one"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
