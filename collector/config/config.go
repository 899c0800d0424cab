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
	// Output is where received records go until the store exists: stdout (JSON lines) or discard.
	Output string `mapstructure:"output"`
	// MetricsAddr serves /metrics; empty turns it off. Default 127.0.0.1:9478.
	MetricsAddr string `mapstructure:"metrics_addr"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `mapstructure:"log_level"`
	// ShutdownTimeout bounds the graceful stop of the listeners. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
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
	settings.O("output", "output", "stdout", "stdout (JSON lines) or discard"),
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
	switch c.Output {
	case "stdout", "discard":
	default:
		errs = append(errs, fmt.Errorf("output %q: want stdout or discard", c.Output))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
