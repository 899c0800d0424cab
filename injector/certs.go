package injector

import (
	"crypto/tls"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// CertReloader serves the certificate in a pair of files and re-reads them when either changes, so a
// rotated Secret (which the kubelet swaps in through a symlink) is served without a restart.
type CertReloader struct {
	cert *fileValue[*tls.Certificate]
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

// fileValue is a value loaded from files and loaded again when any of them changes. A change that
// fails to load (say the certificate was written and the key not yet) keeps the previous value in
// service and is tried again only when the files change again.
type fileValue[T any] struct {
	what    string // names the value in errors and logs
	logKey  string // the log field that names files[0] after a reload
	files   []string
	load    func() (T, error)
	log     *zap.Logger
	reloads *prometheus.CounterVec

	mu    sync.Mutex
	val   T
	stamp []fileStamp
	bad   []fileStamp // the files' state that last failed to load
}

// newFileValue loads the files once; files that do not load are an error at start.
func newFileValue[T any](what, logKey string, files []string, load func() (T, error), log *zap.Logger, reloads *prometheus.CounterVec) (*fileValue[T], error) {
	v := &fileValue[T]{what: what, logKey: logKey, files: files, load: load, log: log, reloads: reloads}
	st, err := v.stat()
	if err != nil {
		return nil, err
	}
	if v.val, err = load(); err != nil {
		return nil, err
	}
	v.stamp = st
	return v, nil
}

// get is the value, loaded again first if the files changed.
func (v *fileValue[T]) get() T {
	v.mu.Lock()
	defer v.mu.Unlock()
	st, err := v.stat()
	if err != nil || slices.Equal(st, v.stamp) || slices.Equal(st, v.bad) {
		return v.val // a missing file mid-swap: the next call looks again
	}
	val, err := v.load()
	if err != nil {
		v.bad = st
		v.reloads.WithLabelValues("error").Inc()
		v.log.Warn(v.what+" not reloaded, keeping the previous one", zap.Error(err))
		return v.val
	}
	v.val, v.stamp = val, st
	v.reloads.WithLabelValues("ok").Inc()
	v.log.Info(v.what+" reloaded", zap.String(v.logKey, v.files[0]))
	return v.val
}

func (v *fileValue[T]) stat() ([]fileStamp, error) {
	st := make([]fileStamp, len(v.files))
	for i, f := range v.files {
		fi, err := os.Stat(f) // follows the Secret volume's symlinks
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.what, err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

// NewCertReloader loads the pair once; a pair that does not load is an error at start.
func NewCertReloader(certFile, keyFile string, log *zap.Logger, reg prometheus.Registerer) (*CertReloader, error) {
	reloads, err := reloadCounter(reg, "flowlens_injector_cert_reloads_total", "Serving certificate")
	if err != nil {
		return nil, err
	}
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load serving certificate %s, %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}
	cert, err := newFileValue("serving certificate", "cert_file", []string{certFile, keyFile}, load, log, reloads)
	if err != nil {
		return nil, err
	}
	return &CertReloader{cert: cert}, nil
}

// GetCertificate is for tls.Config: it checks the files at every handshake (two stats) and reloads them
// when they changed. A pair that fails to load keeps the previous certificate in service.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.get(), nil
}
