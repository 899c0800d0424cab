// Package sim is the attribution accuracy benchmark: a discrete-event simulation of a Kubernetes
// cluster whose pods churn and reuse IP addresses within seconds, with exact ground truth, replayed
// through four attribution strategies on the same trace:
//
//   - heartbeat (flowlens): every arrived record is a heartbeat fed to sonar's ownership index, each
//     record's remote side is resolved with the collector's rules (collector/attribute) and retried as
//     heartbeats arrive until its deadline;
//   - event-only: the same index fed only by the Kubernetes feed's claims (sonar/kube's rules), answers
//     taken as final at once;
//   - event-open: events only, a pod believed to hold its IP until its completion or deletion is seen;
//   - latest-owner: an IP → pod map updated as events arrive, asked at processing time.
//
// Run generates a trace (Generate) and scores it (Score); Report.Write prints the table.
//
// The clock is virtual (Unix nanoseconds), nothing sleeps, and everything follows from Config.Seed.
package sim

import (
	"errors"
	"fmt"
	"time"
)

// Config is every knob of the simulation. Durations are virtual time; fractions are in [0, 1].
type Config struct {
	// Seed makes the run reproducible: the same seed and config give the same trace and report.
	Seed int `mapstructure:"seed"`
	// Duration is the virtual time during which pods churn and connect.
	Duration time.Duration `mapstructure:"duration"`

	// Cluster.
	Nodes int `mapstructure:"nodes"` // pods are spread over these nodes, each with its own clock offset
	// PoolSize is the number of pod IPs. Kept just above the live pod count so freed IPs are reused
	// as soon as ReuseDelayMin..ReuseDelayMax has passed.
	PoolSize      int           `mapstructure:"pool_size"`
	ReuseDelayMin time.Duration `mapstructure:"reuse_delay_min"`
	ReuseDelayMax time.Duration `mapstructure:"reuse_delay_max"`
	// Deployments is the number of backend workloads (each with a service and a cluster IP), besides
	// the gateway, which calls all of them.
	Deployments     int `mapstructure:"deployments"`
	Replicas        int `mapstructure:"replicas"`
	GatewayReplicas int `mapstructure:"gateway_replicas"`
	// PodLifetime is the mean life of a deployment pod (exponential, at least MinLifetime) before it
	// is deleted and replaced.
	PodLifetime time.Duration `mapstructure:"pod_lifetime"`
	MinLifetime time.Duration `mapstructure:"min_lifetime"`
	// ReadyDelay is the longest a new pod takes to become an endpoint; Grace the longest a deleted pod
	// keeps running (terminating, off the endpoints) before its IP is released.
	ReadyDelay time.Duration `mapstructure:"ready_delay"`
	Grace      time.Duration `mapstructure:"grace"`
	// Jobs: JobWorkloads workloads each start a pod about every JobEvery; it runs JobRunMin..JobRunMax,
	// completes (its IP is released and reused) and stays in the API, IP shown, for JobTTL.
	JobWorkloads int           `mapstructure:"job_workloads"`
	JobEvery     time.Duration `mapstructure:"job_every"`
	JobRunMin    time.Duration `mapstructure:"job_run_min"`
	JobRunMax    time.Duration `mapstructure:"job_run_max"`
	JobTTL       time.Duration `mapstructure:"job_ttl"`

	// Traffic.
	CallRate        float64 `mapstructure:"call_rate"`         // connections per second per backend or job pod
	GatewayCallRate float64 `mapstructure:"gateway_call_rate"` // connections per second per gateway pod
	// ServiceFraction of calls dial the callee's cluster IP (the client record shows the service);
	// ExternalFraction of backend calls go to an external address from the CIDR table; StaleFraction
	// dial the IP of a callee pod deleted in the last 10 s (a stale endpoint list).
	ServiceFraction  float64       `mapstructure:"service_fraction"`
	ExternalFraction float64       `mapstructure:"external_fraction"`
	StaleFraction    float64       `mapstructure:"stale_fraction"`
	ShortMean        time.Duration `mapstructure:"short_mean"`    // mean length of a short connection
	LongFraction     float64       `mapstructure:"long_fraction"` // connections that last LongMin..LongMax
	LongMin          time.Duration `mapstructure:"long_min"`
	LongMax          time.Duration `mapstructure:"long_max"`
	ClockSkew        time.Duration `mapstructure:"clock_skew"` // each node's clock is off by up to this

	// Exporters and transport.
	FlushInterval  time.Duration `mapstructure:"flush_interval"`
	FlushJitter    float64       `mapstructure:"flush_jitter"` // each tick moves by up to this fraction of the interval
	TransportMin   time.Duration `mapstructure:"transport_min"`
	TransportMax   time.Duration `mapstructure:"transport_max"`
	BatchLoss      float64       `mapstructure:"batch_loss"`       // batches that never arrive
	BatchReorder   float64       `mapstructure:"batch_reorder"`    // batches delayed by up to a flush interval more
	FinalFlushLoss float64       `mapstructure:"final_flush_loss"` // pods killed before their exporter's last flush

	// Kubernetes event feed, shaped like sonar/kube's informers. A watch event's delay is
	// EventDelayMin..EventDelayTypical, or with probability EventTail EventDelayTypical..EventDelayMax.
	// With probability EventLoss the watch fails instead of delivering it: the watcher sees a watch
	// error, and a relist up to RelistLatency later shows the pod's state then (or that it is gone).
	// Every ResyncInterval the watcher extends its cached pods' claims to ResyncLag before the tick,
	// unless a watch failed in that lag (sonar/kube's resync).
	EventDelayMin     time.Duration `mapstructure:"event_delay_min"`
	EventDelayTypical time.Duration `mapstructure:"event_delay_typical"`
	EventDelayMax     time.Duration `mapstructure:"event_delay_max"`
	EventTail         float64       `mapstructure:"event_tail"`
	EventLoss         float64       `mapstructure:"event_loss"`
	ResyncInterval    time.Duration `mapstructure:"resync_interval"`
	ResyncLag         time.Duration `mapstructure:"resync_lag"`
	RelistLatency     time.Duration `mapstructure:"relist_latency"`
	// EventMargin shortens what a watch event proves: the claim reaches this long before the moment the
	// event was received instead of that moment. 0 is sonar/kube's rule; EventDelayMax makes a claim
	// cover only times at which the pod provably held the address (see the README).
	EventMargin time.Duration `mapstructure:"event_margin"`

	// Collector side.
	MergeGap time.Duration `mapstructure:"merge_gap"` // the index's merge gap
	Deadline time.Duration `mapstructure:"deadline"`  // after a record's arrival; 0: two flush intervals
}

// Defaults is the configuration `make bench-attribution` runs.
func Defaults() Config {
	return Config{
		Seed:     1,
		Duration: 10 * time.Minute,

		Nodes:           4,
		PoolSize:        52,
		ReuseDelayMin:   time.Second,
		ReuseDelayMax:   5 * time.Second,
		Deployments:     12,
		Replicas:        3,
		GatewayReplicas: 3,
		PodLifetime:     2 * time.Minute,
		MinLifetime:     15 * time.Second,
		ReadyDelay:      3 * time.Second,
		Grace:           3 * time.Second,
		JobWorkloads:    2,
		JobEvery:        15 * time.Second,
		JobRunMin:       5 * time.Second,
		JobRunMax:       30 * time.Second,
		JobTTL:          time.Minute,

		CallRate:         3,
		GatewayCallRate:  20,
		ServiceFraction:  0.3,
		ExternalFraction: 0.05,
		StaleFraction:    0.005,
		ShortMean:        200 * time.Millisecond,
		LongFraction:     0.03,
		LongMin:          10 * time.Second,
		LongMax:          2 * time.Minute,
		ClockSkew:        time.Millisecond,

		FlushInterval:  5 * time.Second,
		FlushJitter:    0.1,
		TransportMin:   5 * time.Millisecond,
		TransportMax:   100 * time.Millisecond,
		BatchLoss:      0.01,
		BatchReorder:   0.02,
		FinalFlushLoss: 0.02,

		EventDelayMin:     20 * time.Millisecond,
		EventDelayTypical: 500 * time.Millisecond,
		EventDelayMax:     8 * time.Second,
		EventTail:         0.05,
		EventLoss:         0.01,
		ResyncInterval:    30 * time.Second,
		ResyncLag:         time.Minute,
		RelistLatency:     time.Second,
		EventMargin:       0,

		MergeGap: 30 * time.Second,
	}
}

// deadline is the effective deadline.
func (c Config) deadline() time.Duration {
	if c.Deadline == 0 {
		return 2 * c.FlushInterval
	}
	return c.Deadline
}

// Validate reports the first setting that cannot be simulated.
func (c Config) Validate() error {
	var errs []error
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, d))
		}
	}
	ordered := func(name string, lo, hi time.Duration) {
		if lo < 0 || hi < lo {
			errs = append(errs, fmt.Errorf("%s: need 0 <= min <= max, got %v..%v", name, lo, hi))
		}
	}
	fraction := func(name string, f float64) {
		if !(f >= 0 && f <= 1) {
			errs = append(errs, fmt.Errorf("%s must be in [0, 1], got %v", name, f))
		}
	}
	count := func(name string, n, lo int) {
		if n < lo {
			errs = append(errs, fmt.Errorf("%s must be at least %d, got %d", name, lo, n))
		}
	}
	positive("duration", c.Duration)
	count("nodes", c.Nodes, 1)
	count("pool size", c.PoolSize, 1)
	if c.PoolSize > 1<<16-2 {
		errs = append(errs, fmt.Errorf("pool size must be at most %d, got %d", 1<<16-2, c.PoolSize))
	}
	ordered("reuse delay", c.ReuseDelayMin, c.ReuseDelayMax)
	count("deployments", c.Deployments, 1)
	count("replicas", c.Replicas, 1)
	count("gateway replicas", c.GatewayReplicas, 0)
	positive("pod lifetime", c.PodLifetime)
	ordered("min lifetime", 0, c.MinLifetime)
	ordered("ready delay", 0, c.ReadyDelay)
	ordered("grace", 0, c.Grace)
	count("job workloads", c.JobWorkloads, 0)
	if c.JobWorkloads > 0 {
		positive("job every", c.JobEvery)
		ordered("job run", c.JobRunMin, c.JobRunMax)
		positive("job run max", c.JobRunMax)
		ordered("job ttl", 0, c.JobTTL)
	}
	if c.CallRate < 0 || c.GatewayCallRate < 0 {
		errs = append(errs, errors.New("call rates must not be negative"))
	}
	fraction("service fraction", c.ServiceFraction)
	fraction("external fraction", c.ExternalFraction)
	fraction("stale fraction", c.StaleFraction)
	fraction("long fraction", c.LongFraction)
	fraction("flush jitter", c.FlushJitter)
	fraction("batch loss", c.BatchLoss)
	fraction("batch reorder", c.BatchReorder)
	fraction("final flush loss", c.FinalFlushLoss)
	fraction("event tail", c.EventTail)
	fraction("event loss", c.EventLoss)
	if c.FlushJitter >= 0.5 {
		errs = append(errs, fmt.Errorf("flush jitter must be below 0.5 (ticks would cross), got %v", c.FlushJitter))
	}
	positive("short mean", c.ShortMean)
	ordered("long connections", c.LongMin, c.LongMax)
	ordered("clock skew", 0, c.ClockSkew)
	positive("flush interval", c.FlushInterval)
	ordered("transport delay", c.TransportMin, c.TransportMax)
	ordered("event delay", c.EventDelayMin, c.EventDelayTypical)
	ordered("event delay tail", c.EventDelayTypical, c.EventDelayMax)
	positive("resync interval", c.ResyncInterval)
	ordered("resync lag", 0, c.ResyncLag)
	ordered("relist latency", 0, c.RelistLatency)
	ordered("event margin", 0, c.EventMargin)
	ordered("merge gap", 0, c.MergeGap)
	ordered("deadline", 0, c.Deadline)
	return errors.Join(errs...)
}
