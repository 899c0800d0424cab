// Package cidrfile loads sonar's static CIDR table from a YAML file into the index and reloads it when
// the file changes. The table attributes addresses no exporter or Kubernetes event covers: external
// services, load balancers, partner networks. It is the weakest evidence: it answers only when no
// heartbeat or event range covers the time.
//
// The file is a list of entries:
//
//   - cidr: 203.0.113.0/24      # required: a prefix, or one address (taken as /32 or /128)
//     name: payments-provider   # required: the workload name lookups answer
//     namespace: external       # optional, like the other fields of a workload
//     cluster: ""
//     node: ""
//
// The longest matching prefix wins; two entries with the same prefix and different owners make
// lookups inside it answer CONFLICT. An empty file (or an empty list) is an empty table.
package cidrfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Entry is one line of the table as the file spells it.
type Entry struct {
	CIDR      string `yaml:"cidr"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
	Cluster   string `yaml:"cluster"`
	Node      string `yaml:"node"`
}

// Parse reads a table, refusing unknown fields and saying which entries are wrong.
func Parse(b []byte) ([]index.CIDR, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var entries []Entry
	if err := dec.Decode(&entries); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	table := make([]index.CIDR, 0, len(entries))
	var errs []error
	for i, e := range entries {
		p, err := parsePrefix(e.CIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %d: %w", i+1, err))
			continue
		}
		if e.Name == "" {
			errs = append(errs, fmt.Errorf("entry %d (%s): name is required", i+1, e.CIDR))
			continue
		}
		table = append(table, index.CIDR{Prefix: p, Owner: flow.Workload{Name: e.Name, Namespace: e.Namespace, Cluster: e.Cluster, Node: e.Node}})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return table, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, errors.New("cidr is required")
	}
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("cidr %q: %w", s, err)
		}
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %q: %w", s, err)
	}
	if p.Addr().Is4In6() { // lookups are by unmapped address
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("cidr %q: a v4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// File keeps the index's CIDR table in step with one file.
type File struct {
	path    string
	idx     *index.Index
	log     *zap.Logger
	reloads *prometheus.CounterVec
	entries prometheus.Gauge

	mu   sync.Mutex
	sum  [32]byte // of the content loaded last
	good bool
}

// Load reads path into idx's CIDR table. A file that does not parse is an error here, at start: a
// typo should stop sonar rather than run it without the table. Later edits go through Run.
func Load(path string, idx *index.Index, log *zap.Logger, reg prometheus.Registerer) (*File, error) {
	f := &File{path: path, idx: idx, log: log,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowlens_sonar_cidr_reloads_total",
			Help: "Loads of the CIDR file, by result (ok, error: the previous table stays)."}, []string{"result"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flowlens_sonar_cidr_entries",
			Help: "Entries in the CIDR table in use."}),
	}
	f.reloads.WithLabelValues("ok")
	f.reloads.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(f.reloads, f.entries)
	}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// reload reads the file and, if its content changed and parses, installs it. On error the previous
// table stays.
func (f *File) reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if err == nil {
		sum := sha256.Sum256(b)
		if f.good && sum == f.sum {
			return nil // an event that did not change the content (touch, chmod, a sibling file)
		}
		var table []index.CIDR
		if table, err = Parse(b); err == nil {
			f.idx.SetCIDRs(table)
			f.sum, f.good = sum, true
			f.reloads.WithLabelValues("ok").Inc()
			f.entries.Set(float64(len(table)))
			f.log.Info("CIDR table loaded", zap.String("file", f.path), zap.Int("entries", len(table)))
			return nil
		}
	}
	err = fmt.Errorf("cidr file %s: %w", f.path, err)
	f.reloads.WithLabelValues("error").Inc()
	f.log.Error("CIDR table not reloaded; the previous one stays in use", zap.Error(err))
	return err
}

// Run reloads the table whenever the file changes, until ctx ends. It watches the file's directory:
// editors write a new file and rename it over the old, and Kubernetes swaps a ConfigMap's ..data
// symlink, so the file's own inode is not what changes.
func (f *File) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch cidr file: %w", err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("watch cidr file %s: %w", f.path, err)
	}
	f.reload() // catch a change between Load and the watch starting
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			// Any event in the directory: reload compares content, so siblings cost one read.
			settle = time.After(100 * time.Millisecond) // one reload for a burst of events
		case err := <-w.Errors:
			f.log.Warn("cidr file watch", zap.Error(err))
		case <-settle:
			f.reload()
		}
	}
}
