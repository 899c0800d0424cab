package injector

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// CABundle is the PEM of the CA(s) that signed the collector's certificate, read from a file (the
// collector's Secret's ca.crt, mounted into the injector) and handed to each sidecar in its
// environment, as Linkerd hands its proxies their trust anchors: a pod cannot mount a Secret of
// another namespace, and the sidecars run in every namespace. The file is re-read when it changes, so
// pods created after a CA rotation trust the new CA.
type CABundle struct {
	pem *fileValue[string]
}

// maxCABytes bounds the PEM copied into every sidecar's environment: a few CA certificates take a few
// KiB, while a whole system trust store (~200 KiB) would bloat every pod object in etcd.
const maxCABytes = 64 << 10

// NewCABundle loads file once; a file that holds no certificate is an error at start.
func NewCABundle(file string, log *zap.Logger, reg prometheus.Registerer) (*CABundle, error) {
	reloads, err := reloadCounter(reg, "flowlens_injector_ca_reloads_total", "Collector CA (handed to sidecars)")
	if err != nil {
		return nil, err
	}
	v, err := newFileValue("collector CA", "ca_file", []string{file}, func() (string, error) { return loadCA(file) }, log, reloads)
	if err != nil {
		return nil, err
	}
	return &CABundle{pem: v}, nil
}

// PEM is the bundle, re-read first if the file changed. A changed file that does not parse keeps the
// previous bundle in service until the file changes again.
func (b *CABundle) PEM() string { return b.pem.get() }

// loadCA keeps only the file's certificates, re-encoded: comments and keys never reach a pod spec.
func loadCA(file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("collector CA: %w", err)
	}
	var out []byte
	for {
		var blk *pem.Block
		blk, raw = pem.Decode(raw)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return "", fmt.Errorf("collector CA %s: %w", file, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
	}
	if len(out) == 0 {
		return "", fmt.Errorf("collector CA %s: no certificate in it", file)
	}
	if len(out) > maxCABytes {
		return "", fmt.Errorf("collector CA %s: %d bytes of certificates, more than %d: every injected pod's spec would carry them", file, len(out), maxCABytes)
	}
	return string(out), nil
}
