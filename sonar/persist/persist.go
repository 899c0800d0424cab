// Package persist keeps sonar's index across restarts on one machine: a snapshot of every range held,
// plus an append-only log of the claims reported since, fsync'd in groups. On start the snapshot is
// loaded and the log replayed, so nothing that was acknowledged is lost.
//
// Layout of the data directory:
//
//	snapshot                  the index as of the start of segment N (written to snapshot.tmp, fsync'd, renamed)
//	claims-<N as 16 hex>.log  claims appended since, one segment per snapshot period
//
// A log segment is a sequence of frames: payload length (uint32 LE), CRC-32C of the payload (uint32
// LE), payload (a count and that many claims). A frame that is cut short or fails its checksum ends the
// segment: it was being written when the process died, so it was never acknowledged. Replay keeps the
// good frames before it, reports the rest and truncates it away.
//
// Fleets do not use this package: there the index is rebuilt from the JetStream ownership stream
// (collector/fleet/ownership).
package persist

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"

	"github.com/flowlens/flowlens/sonar/index"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune a Log. Zero values take the defaults.
type Options struct {
	// SyncInterval is how often appended claims are fsync'd when nobody calls Sync. Default 100ms.
	SyncInterval time.Duration
	// SnapshotInterval is how often a snapshot is written and the log started afresh. Default 5m.
	SnapshotInterval time.Duration
}

// Replay says what Open found.
type Replay struct {
	SnapshotRanges int      // ranges loaded from the snapshot
	Segments       int      // log segments replayed
	Claims         int      // claims replayed from them
	Corrupt        []string // one line per segment whose tail was cut or corrupt, with what was dropped
}

// Log is the claim log and snapshotter of one data directory. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	idx  *index.Index
	log  *zap.Logger
	m    *metrics
	opts Options

	snapMu sync.Mutex // one snapshot at a time
	syncMu sync.Mutex // one flush+fsync (or rotation) at a time
	mu     sync.Mutex // guards the fields below
	f      *os.File
	w      *bufio.Writer
	seg    uint64
	frames uint64 // frames appended to the current segment
	synced uint64 // frames known durable in it
	err    error  // sticky write error: the log refuses appends until restart
	buf    []byte

	replay Replay
	stop   chan struct{}
	done   chan struct{}
	closed bool
}

type metrics struct {
	errors    *prometheus.CounterVec
	claims    prometheus.Counter
	snapshots prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flowlens_sonar_persist_errors_total",
			Help: "Persistence errors, by reason (write, sync, snapshot, corrupt_log)."}, []string{"reason"}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_sonar_persist_claims_total",
			Help: "Claims appended to the log."}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_sonar_persist_snapshots_total",
			Help: "Snapshots written."}),
	}
	for _, r := range []string{"write", "sync", "snapshot", "corrupt_log"} {
		m.errors.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.errors, m.claims, m.snapshots)
	}
	return m
}

// Open loads dir's snapshot and log into idx (which should be empty), starts a new log segment and
// the background fsync and snapshot loops. A corrupt log tail is reported (Replayed, the log and the
// corrupt_log error counter) and the good prefix kept; an unreadable snapshot is an error.
func Open(dir string, idx *index.Index, log *zap.Logger, reg prometheus.Registerer, opts ...Options) (*Log, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = 100 * time.Millisecond
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = 5 * time.Minute
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	l := &Log{dir: dir, idx: idx, log: log, m: newMetrics(reg), opts: o, stop: make(chan struct{}), done: make(chan struct{})}
	first, err := l.loadSnapshot()
	if err != nil {
		return nil, err
	}
	segs, err := l.segments()
	if err != nil {
		return nil, err
	}
	next := first
	for _, s := range segs {
		if s < first { // covered by the snapshot: left over from a crash between rename and delete
			os.Remove(l.segPath(s))
			continue
		}
		if err := l.replaySegment(s); err != nil {
			return nil, err
		}
		next = s + 1
	}
	if err := l.openSegment(next); err != nil {
		return nil, err
	}
	log.Info("index restored", zap.String("dir", dir), zap.Int("snapshot_ranges", l.replay.SnapshotRanges),
		zap.Int("segments", l.replay.Segments), zap.Int("claims", l.replay.Claims))
	go l.loop()
	return l, nil
}

// Replayed says what Open loaded.
func (l *Log) Replayed() Replay { return l.replay }

func (l *Log) segPath(n uint64) string {
	return filepath.Join(l.dir, fmt.Sprintf("claims-%016x.log", n))
}

// segments lists the log segments in dir, oldest first.
func (l *Log) segments() ([]uint64, error) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	var segs []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "claims-") || !strings.HasSuffix(name, ".log") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "claims-"), ".log"), 16, 64)
		if err == nil {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs, nil
}

func (l *Log) replaySegment(n uint64) error {
	path := l.segPath(n)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("log segment: %w", err)
	}
	good, claims, why := 0, 0, ""
	for good < len(b) {
		if len(b)-good < 8 {
			why = "frame header cut short"
			break
		}
		size := int(binary.LittleEndian.Uint32(b[good:]))
		sum := binary.LittleEndian.Uint32(b[good+4:])
		if size > len(b)-good-8 {
			why = "frame cut short"
			break
		}
		payload := b[good+8 : good+8+size]
		if crc32.Checksum(payload, castagnoli) != sum {
			why = "frame checksum mismatch"
			break
		}
		d := decoder{b: payload}
		cs := make([]index.Claim, d.uvarint())
		for i := range cs {
			cs[i] = d.claim()
		}
		if d.err != nil || len(d.b) != 0 {
			why = fmt.Sprintf("frame undecodable: %v", cmpErr(d.err))
			break
		}
		for _, c := range cs {
			l.idx.Add(c)
		}
		claims += len(cs)
		good += 8 + size
	}
	l.replay.Segments++
	l.replay.Claims += claims
	if why != "" {
		msg := fmt.Sprintf("%s: %s at byte %d: kept %d claims, dropped %d bytes", filepath.Base(path), why, good, claims, len(b)-good)
		l.replay.Corrupt = append(l.replay.Corrupt, msg)
		l.m.errors.WithLabelValues("corrupt_log").Inc()
		l.log.Warn("claim log tail dropped (it was being written when sonar stopped, so never acknowledged)", zap.String("detail", msg))
		if err := os.Truncate(path, int64(good)); err != nil {
			return fmt.Errorf("truncate log segment: %w", err)
		}
	}
	return nil
}

func cmpErr(err error) error {
	if err == nil {
		return errors.New("trailing bytes")
	}
	return err
}

func (l *Log) openSegment(n uint64) error {
	f, err := os.OpenFile(l.segPath(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return err
	}
	l.f, l.w, l.seg, l.frames, l.synced = f, bufio.NewWriterSize(f, 256<<10), n, 0, 0
	return nil
}

// Append writes claims to the log as one frame. They are durable once Sync returns (or within the
// sync interval). Add claims to the index before appending them: a snapshot taken after the log
// rotates must hold everything the old segment holds.
func (l *Log) Append(claims []index.Claim) error {
	if len(claims) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.closed {
		return errors.New("claim log closed")
	}
	b := append(l.buf[:0], 0, 0, 0, 0, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, uint64(len(claims)))
	for _, c := range claims {
		b = appendClaim(b, c)
	}
	binary.LittleEndian.PutUint32(b, uint32(len(b)-8))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], castagnoli))
	l.buf = b
	if _, err := l.w.Write(b); err != nil {
		return l.fail("write", err)
	}
	l.frames++
	l.m.claims.Add(float64(len(claims)))
	return nil
}

// fail makes err sticky and counts it; l.mu is held.
func (l *Log) fail(reason string, err error) error {
	l.err = fmt.Errorf("claim log %s: %w", reason, err)
	l.m.errors.WithLabelValues(reason).Inc()
	l.log.Error("claim log failed: reports are refused until restart", zap.Error(l.err))
	return l.err
}

// Sync returns once every claim appended before it was called is on disk. Concurrent callers share
// one fsync: whoever comes second finds its frames already durable.
func (l *Log) Sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	return l.syncLocked()
}

func (l *Log) syncLocked() error {
	l.mu.Lock()
	if l.err != nil {
		defer l.mu.Unlock()
		return l.err
	}
	target := l.frames
	if l.synced >= target {
		l.mu.Unlock()
		return nil
	}
	if err := l.w.Flush(); err != nil {
		defer l.mu.Unlock()
		return l.fail("write", err)
	}
	f := l.f
	l.mu.Unlock()
	// Appends carry on into the buffer while the disk syncs.
	err := f.Sync()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		return l.fail("sync", err)
	}
	l.synced = max(l.synced, target)
	return nil
}

// Snapshot writes the index to the snapshot file and starts a new log segment; the segments the
// snapshot covers are deleted.
func (l *Log) Snapshot() error {
	l.snapMu.Lock()
	defer l.snapMu.Unlock()
	if err := l.rotate(); err != nil {
		return err
	}
	l.mu.Lock()
	next := l.seg
	l.mu.Unlock()
	if err := l.writeSnapshot(next); err != nil {
		l.m.errors.WithLabelValues("snapshot").Inc()
		return err
	}
	l.m.snapshots.Inc()
	segs, _ := l.segments()
	for _, s := range segs {
		if s < next {
			os.Remove(l.segPath(s))
		}
	}
	return nil
}

// rotate starts a new segment. Everything appended to the old one is flushed under the same lock
// that switches the writer (an append cannot slip in between and be lost), and fsync'd before any
// Sync can run again: a Sync that then finds the new segment empty may rightly return at once.
func (l *Log) rotate() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	if l.err != nil {
		defer l.mu.Unlock()
		return l.err
	}
	if err := l.w.Flush(); err != nil {
		defer l.mu.Unlock()
		return l.fail("write", err)
	}
	old := l.f
	err := l.openSegment(l.seg + 1)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	defer old.Close()
	if err := old.Sync(); err != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.fail("sync", err)
	}
	return nil
}

const snapMagic = "FLSONAR\x01"

// writeSnapshot writes every range held, as of the start of segment next: header (magic, next), then
// records (1: an owner's six strings, numbered in order of appearance; 2: address, start, end, last
// seen, owner number, evidence, conflict flag), then a 0 byte and the CRC-32C of everything before it.
func (l *Log) writeSnapshot(next uint64) error {
	tmp := filepath.Join(l.dir, "snapshot.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer os.Remove(tmp) // a no-op after the rename
	crc := crc32.New(castagnoli)
	w := bufio.NewWriterSize(f, 1<<20)
	var b []byte
	flush := func() {
		crc.Write(b)
		w.Write(b)
		b = b[:0]
	}
	b = binary.AppendUvarint(append(b, snapMagic...), next)
	owners := map[flow.Workload]uint64{}
	l.idx.Each(func(ip netip.Addr, r index.Range, conflict bool) bool {
		id, ok := owners[r.Owner]
		if !ok {
			id = uint64(len(owners))
			owners[r.Owner] = id
			b = appendWorkload(append(b, 1), r.Owner)
		}
		b = appendAddr(append(b, 2), ip)
		b = binary.AppendVarint(b, r.Start)
		b = binary.AppendVarint(b, r.End)
		b = binary.AppendVarint(b, r.LastSeen)
		b = binary.AppendUvarint(b, id)
		b = append(b, byte(r.Evidence), boolByte(conflict))
		if len(b) > 64<<10 {
			flush()
		}
		return true
	})
	b = append(b, 0)
	flush()
	w.Write(crc.Sum(nil))
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, "snapshot")); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return syncDir(l.dir)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// loadSnapshot restores the snapshot, if there is one, and returns the first log segment it does not
// cover.
func (l *Log) loadSnapshot() (uint64, error) {
	path := filepath.Join(l.dir, "snapshot")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	if len(b) < len(snapMagic)+5 || string(b[:len(snapMagic)]) != snapMagic {
		return 0, fmt.Errorf("snapshot %s: not a sonar snapshot (move it away to start from the log alone)", path)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return 0, fmt.Errorf("snapshot %s: checksum mismatch (move it away to start from the log alone)", path)
	}
	d := decoder{b: body[len(snapMagic):]}
	next := d.uvarint()
	var owners []flow.Workload
	for d.err == nil {
		switch t := d.byte(); t {
		case 0:
			if d.err == nil && len(d.b) != 0 {
				d.fail(errors.New("bytes after the end"))
			}
			if d.err != nil {
				return 0, fmt.Errorf("snapshot %s: %w", path, d.err)
			}
			return next, nil
		case 1:
			owners = append(owners, d.workload())
		case 2:
			ip := d.addr()
			r := index.Range{Start: d.varint(), End: d.varint(), LastSeen: d.varint()}
			id := d.uvarint()
			r.Evidence = index.Evidence(d.byte())
			conflict := d.byte() == 1
			if d.err == nil && id >= uint64(len(owners)) {
				d.fail(fmt.Errorf("owner %d not defined", id))
			}
			if d.err == nil {
				r.Owner = owners[id]
				l.idx.Restore(ip, r, conflict)
				l.replay.SnapshotRanges++
			}
		default:
			d.fail(fmt.Errorf("record type %d", t))
		}
	}
	return 0, fmt.Errorf("snapshot %s: %w", path, d.err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("data dir sync: %w", err)
	}
	return nil
}

func (l *Log) loop() {
	defer close(l.done)
	syncT := time.NewTicker(l.opts.SyncInterval)
	defer syncT.Stop()
	snapT := time.NewTicker(l.opts.SnapshotInterval)
	defer snapT.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-syncT.C:
			l.Sync() // errors are sticky, counted and logged where they happen
		case <-snapT.C:
			if err := l.Snapshot(); err != nil {
				l.log.Error("snapshot failed; the log keeps growing until one succeeds", zap.Error(err))
			}
		}
	}
}

// Close stops the background loops, writes a final snapshot and closes the log. Appends after Close
// fail.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	err := l.Snapshot()
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if ferr := l.w.Flush(); err == nil && ferr != nil {
		err = ferr
	}
	if cerr := l.f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}
