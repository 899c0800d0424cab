// Package config defines flow-collector's configuration: a typed struct filled by viper from flags,
// FLOWLENS_ environment variables and an optional YAML file, then validated.
package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/flowlens/flowlens/internal/settings"
)

// Config is everything flow-collector can be told.
type Config struct {
	// GRPCAddr is where the gRPC ingest listens; empty turns it off. Default 127.0.0.1:9990.
	GRPCAddr string `mapstructure:"grpc_addr"`
	// HTTPSAddr is where the HTTPS ingest listens, HTTP/2 on TCP and HTTP/3 on UDP, same port; empty: off.
	HTTPSAddr string `mapstructure:"https_addr"`
	// UDPAddr is where the UDP ingest listens; empty: off. UDPSockets SO_REUSEPORT sockets share it.
	UDPAddr    string `mapstructure:"udp_addr"`
	UDPSockets int    `mapstructure:"udp_sockets"`
	// UDPKeyFile holds the HMAC key every datagram is signed with (required with UDPAddr).
	UDPKeyFile string `mapstructure:"udp_key_file"`
	// CertFile and KeyFile are the collector's TLS certificate (required for HTTPS, and for gRPC unless
	// Insecure). ClientCAFile, when set, makes client certificates required and verified (mTLS).
	CertFile     string `mapstructure:"cert_file"`
	KeyFile      string `mapstructure:"key_file"`
	ClientCAFile string `mapstructure:"client_ca_file"`
	// Insecure serves gRPC without TLS: for loopback only.
	Insecure bool `mapstructure:"insecure"`
	// Prefer is sent to every exporter in acks as the transport to use (grpc, https, udp); empty: no hint.
	Prefer string `mapstructure:"prefer"`
	// DataDir holds the DuckDB store (flows.duckdb) and the embedded sonar's index. Default ./data.
	DataDir string `mapstructure:"data_dir"`
	// APIAddr serves the query API, sonar's lookups, /healthz and /readyz; empty: off. Default 127.0.0.1:9480.
	APIAddr string `mapstructure:"api_addr"`
	// Retention drops stored flows that ended longer ago. Default 168h (7 days).
	Retention time.Duration `mapstructure:"retention"`
	// Cluster names this collector's cluster; Replica names this replica in the ownership stream
	// (default: the host name).
	Cluster string `mapstructure:"cluster"`
	Replica string `mapstructure:"replica"`
	// Attribution and the ownership index.
	Attribution Attribution `mapstructure:"attribution"`
	// Pipeline bounds.
	QueueRecords  int `mapstructure:"queue_records"`
	ParkedRecords int `mapstructure:"parked_records"`
	// NATS, when URL is set, publishes enriched flows and shares ownership through JetStream.
	NATS NATS `mapstructure:"nats"`
	// Kafka, when Brokers is set, publishes enriched flows to Topic through franz-go.
	Kafka Kafka `mapstructure:"kafka"`
	// MetricsAddr serves /metrics; empty turns it off. Default 127.0.0.1:9478.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `mapstructure:"log_level"`
	// ShutdownTimeout bounds the graceful stop of the listeners. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

// Attribution configures how remote workloads are decided.
type Attribution struct {
	// Deadline is how long a flow whose remote address has no owner waits for one before it is stored
	// UNATTRIBUTED: two of the exporters' flush intervals. Default 2m (exporters flush every 60s).
	Deadline time.Duration `mapstructure:"deadline"`
	// SonarAddr is a sonar service's gRPC address; empty runs sonar in the collector (the default).
	SonarAddr string `mapstructure:"sonar_addr"`
	// CIDRFile is a static table of CIDRs and their owners (embedded sonar), reloaded when it changes.
	CIDRFile string `mapstructure:"cidr_file"`
	// MergeGap, MaxAge and MaxRanges configure the embedded index (see sonar).
	MergeGap  time.Duration `mapstructure:"merge_gap"`
	MaxAge    time.Duration `mapstructure:"max_age"`
	MaxRanges int           `mapstructure:"max_ranges"`
}

// NATS configures fleet mode through JetStream.
type NATS struct {
	URL             string `mapstructure:"url"`
	FlowsStream     string `mapstructure:"flows_stream"`
	OwnershipStream string `mapstructure:"ownership_stream"`
	// StoreFleetFlows makes this replica also store the flows the other replicas publish, so that its
	// query API and console answer for the whole fleet. Default true; turn it off where something else
	// answers fleet-wide queries and each replica's store may hold only its own exporters' flows.
	StoreFleetFlows bool `mapstructure:"store_fleet_flows"`
}

// Kafka configures the optional Kafka output.
type Kafka struct {
	Brokers string `mapstructure:"brokers"` // comma-separated host:port
	Topic   string `mapstructure:"topic"`
}

var options = []settings.Option{
	settings.O("grpc_addr", "grpc-addr", "127.0.0.1:9990", "gRPC ingest address (empty: off)"),
	settings.O("https_addr", "https-addr", "", "HTTPS ingest address, HTTP/2 and HTTP/3 (empty: off)"),
	settings.O("udp_addr", "udp-addr", "", "UDP ingest address (empty: off)"),
	settings.O("udp_sockets", "udp-sockets", 2, "SO_REUSEPORT sockets on the UDP address"),
	settings.O("udp_key_file", "udp-key-file", "", "file with the UDP HMAC key"),
	settings.O("cert_file", "cert-file", "", "TLS certificate"),
	settings.O("key_file", "key-file", "", "TLS key"),
	settings.O("client_ca_file", "client-ca-file", "", "CA for client certificates: makes mTLS required"),
	settings.O("insecure", "insecure", false, "gRPC without TLS (loopback only)"),
	settings.O("prefer", "prefer", "", "transport exporters should use: grpc, https or udp"),
	settings.O("data_dir", "data-dir", "data", "directory for the flow store and the embedded sonar's index"),
	settings.O("api_addr", "api-addr", "127.0.0.1:9480", "query API, lookups, /healthz and /readyz (empty: off)"),
	settings.O("retention", "retention", 168*time.Hour, "drop stored flows that ended longer ago"),
	settings.O("cluster", "cluster", "", "this collector's cluster"),
	settings.O("replica", "replica", "", "this replica's name in the ownership stream (default: host name)"),
	settings.O("attribution.deadline", "attribution-deadline", 2*time.Minute, "how long a flow waits for its remote owner"),
	settings.O("attribution.sonar_addr", "sonar-addr", "", "remote sonar gRPC address (empty: sonar in process)"),
	settings.O("attribution.cidr_file", "cidr-file", "", "static CIDR ownership table (embedded sonar)"),
	settings.O("attribution.merge_gap", "merge-gap", 30*time.Second, "same-owner claims this close merge into one range"),
	settings.O("attribution.max_age", "index-max-age", 24*time.Hour, "drop ownership ranges that ended longer ago"),
	settings.O("attribution.max_ranges", "index-max-ranges", 4<<20, "most ownership ranges held"),
	settings.O("queue_records", "queue-records", 128<<10, "records accepted and not yet stored before ingest answers RETRY/429"),
	settings.O("parked_records", "parked-records", 1<<20, "records waiting for their remote owner"),
	settings.O("nats.url", "nats-url", "", "NATS server for fleet mode (empty: off)"),
	settings.O("nats.flows_stream", "nats-flows-stream", "FLOWLENS_FLOWS", "JetStream stream of enriched flows"),
	settings.O("nats.ownership_stream", "nats-ownership-stream", "FLOWLENS_OWNERSHIP", "JetStream stream of ownership claims"),
	settings.O("nats.store_fleet_flows", "nats-store-fleet-flows", true, "also store the flows other replicas publish (complete fleet-wide queries)"),
	settings.O("kafka.brokers", "kafka-brokers", "", "Kafka brokers, comma-separated (empty: off)"),
	settings.O("kafka.topic", "kafka-topic", "flowlens-flows", "Kafka topic for enriched flows"),
	settings.O("metrics_addr", "metrics-addr", "127.0.0.1:9478", "address for /metrics (empty: off)"),
	settings.O("log_level", "log-level", "info", "debug, info, warn or error"),
	settings.O("shutdown_timeout", "shutdown-timeout", 10*time.Second, "graceful stop of the listeners"),
}

// Load reads the configuration from args, the environment and the file named by --config.
func Load(args []string) (Config, error) {
	var c Config
	if _, err := settings.Load("flow-collector", args, options, &c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate says everything that is wrong with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCAddr == "" && c.HTTPSAddr == "" && c.UDPAddr == "" {
		errs = append(errs, errors.New("no ingest: set grpc_addr, https_addr or udp_addr"))
	}
	if c.UDPAddr != "" && (c.UDPKeyFile == "" || c.UDPSockets < 1) {
		errs = append(errs, errors.New("udp_addr needs udp_key_file and udp_sockets >= 1"))
	}
	needTLS := c.HTTPSAddr != "" || (c.GRPCAddr != "" && !c.Insecure)
	if needTLS && (c.CertFile == "" || c.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file are required for HTTPS and for gRPC without insecure"))
	}
	switch c.Prefer {
	case "", "grpc", "https", "udp":
	default:
		errs = append(errs, fmt.Errorf("prefer %q: want grpc, https or udp", c.Prefer))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required"))
	}
	if c.Attribution.Deadline <= 0 || c.Retention <= 0 || c.QueueRecords < 1 || c.ParkedRecords < 0 {
		errs = append(errs, errors.New("attribution.deadline, retention and queue_records must be positive"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
