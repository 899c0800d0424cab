package injector

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// CertReloader serves the certificate in a pair of files and re-reads them when either changes, so a
// rotated Secret (which the kubelet swaps in through a symlink) is served without a restart.
type CertReloader struct {
	certFile, keyFile string
	log               *zap.Logger
	reloads           *prometheus.CounterVec

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
	bad   [2]fileStamp // the files' state that last failed to load: not retried until they change again
}

// reloadCounter registers the counter of a file's reloads, by result.
func reloadCounter(reg prometheus.Registerer, name, what string) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name,
		Help: what + " reloads after its files changed, by result (ok, error: the previous one is kept).",
	}, []string{"result"})
	c.WithLabelValues("ok")
	c.WithLabelValues("error")
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	return c, nil
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// NewCertReloader loads the pair once; a pair that does not load is an error at start.
func NewCertReloader(certFile, keyFile string, log *zap.Logger, reg prometheus.Registerer) (*CertReloader, error) {
	reloads, err := reloadCounter(reg, "flowlens_injector_cert_reloads_total", "Serving certificate")
	if err != nil {
		return nil, err
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, reloads: reloads}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	if err := r.load(st); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is for tls.Config: it checks the files at every handshake (two stats) and reloads them
// when they changed. A pair that fails to load (say the certificate was written and the key not yet)
// keeps the previous certificate in service and is tried again when the files change again.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stat()
	if err != nil || st == r.stamp || st == r.bad {
		return r.cert, nil // a missing file mid-swap: the next handshake looks again
	}
	if err := r.load(st); err != nil {
		r.bad = st
		r.reloads.WithLabelValues("error").Inc()
		r.log.Warn("serving certificate not reloaded, keeping the previous one", zap.Error(err))
		return r.cert, nil
	}
	r.reloads.WithLabelValues("ok").Inc()
	r.log.Info("serving certificate reloaded", zap.String("cert_file", r.certFile))
	return r.cert, nil
}

func (r *CertReloader) stat() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f) // follows the Secret volume's symlinks
		if err != nil {
			return st, fmt.Errorf("serving certificate: %w", err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

func (r *CertReloader) load(st [2]fileStamp) error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load serving certificate %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &c, st
	return nil
}
