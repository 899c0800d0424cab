package injector

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// CABundle is the PEM of the CA(s) that signed the collector's certificate, read from a file (the
// collector's Secret's ca.crt, mounted into the injector) and handed to each sidecar in its
// environment, as Linkerd hands its proxies their trust anchors: a pod cannot mount a Secret of
// another namespace, and the sidecars run in every namespace. The file is re-read when it changes, so
// pods created after a CA rotation trust the new CA.
type CABundle struct {
	file    string
	log     *zap.Logger
	reloads *prometheus.CounterVec

	mu    sync.Mutex
	pem   string
	stamp fileStamp
	bad   fileStamp
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
	b := &CABundle{file: file, log: log, reloads: reloads}
	st, err := b.stat()
	if err != nil {
		return nil, err
	}
	if err := b.load(st); err != nil {
		return nil, err
	}
	return b, nil
}

// PEM is the bundle, re-read first if the file changed. A changed file that does not parse keeps the
// previous bundle in service until the file changes again.
func (b *CABundle) PEM() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, err := b.stat()
	if err != nil || st == b.stamp || st == b.bad {
		return b.pem
	}
	if err := b.load(st); err != nil {
		b.bad = st
		b.reloads.WithLabelValues("error").Inc()
		b.log.Warn("collector CA not reloaded, keeping the previous one", zap.Error(err))
		return b.pem
	}
	b.reloads.WithLabelValues("ok").Inc()
	b.log.Info("collector CA reloaded", zap.String("ca_file", b.file))
	return b.pem
}

func (b *CABundle) stat() (fileStamp, error) {
	fi, err := os.Stat(b.file)
	if err != nil {
		return fileStamp{}, fmt.Errorf("collector CA: %w", err)
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// load keeps only the file's certificates, re-encoded: comments and keys never reach a pod spec.
func (b *CABundle) load(st fileStamp) error {
	raw, err := os.ReadFile(b.file)
	if err != nil {
		return fmt.Errorf("collector CA: %w", err)
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
			return fmt.Errorf("collector CA %s: %w", b.file, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
	}
	if len(out) == 0 {
		return fmt.Errorf("collector CA %s: no certificate in it", b.file)
	}
	if len(out) > maxCABytes {
		return fmt.Errorf("collector CA %s: %d bytes of certificates, more than %d: every injected pod's spec would carry them", b.file, len(out), maxCABytes)
	}
	b.pem, b.stamp = string(out), st
	return nil
}
