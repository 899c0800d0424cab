// Command attribution-bench runs the attribution accuracy benchmark (package sonar/sim) and prints its
// table: a simulated cluster churning pod IPs, attributed three ways on the same trace and scored
// against the ground truth. Every knob is a flag (or FLOWLENS_ variable, or YAML key); the defaults,
// seed included, are what `make bench-attribution` runs, so two runs print the same report.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/flowlens/flowlens/internal/settings"
	"github.com/flowlens/flowlens/sonar/sim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "attribution-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, err := load(args)
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	start := time.Now()
	rep, err := sim.Run(cfg)
	if err != nil {
		return err
	}
	if err := rep.Write(os.Stdout); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(os.Stderr, "simulated and scored in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// load fills a sim.Config from flags, FLOWLENS_ variables and --config, over sim.Defaults. Fractions
// are declared as strings (the settings loader has no float flags) and decoded as numbers.
func load(args []string) (sim.Config, error) {
	d := sim.Defaults()
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	O := settings.O
	options := []settings.Option{
		O("seed", "seed", d.Seed, "random seed: the same seed and settings give the same report"),
		O("duration", "duration", d.Duration, "virtual time simulated"),
		O("nodes", "nodes", d.Nodes, "nodes, each with its own clock offset"),
		O("pool_size", "pool-size", d.PoolSize, "pod IPs in the pool (just above the live pods, so IPs are reused quickly)"),
		O("reuse_delay_min", "reuse-delay-min", d.ReuseDelayMin, "shortest time before a released IP is assigned again"),
		O("reuse_delay_max", "reuse-delay-max", d.ReuseDelayMax, "longest time before a released IP may be assigned again"),
		O("deployments", "deployments", d.Deployments, "backend deployments, each with a service (cluster IP)"),
		O("replicas", "replicas", d.Replicas, "pods per backend deployment"),
		O("gateway_replicas", "gateway-replicas", d.GatewayReplicas, "pods of the gateway, which calls every backend"),
		O("pod_lifetime", "pod-lifetime", d.PodLifetime, "mean life of a deployment pod before it is replaced"),
		O("min_lifetime", "min-lifetime", d.MinLifetime, "shortest life of a deployment pod"),
		O("ready_delay", "ready-delay", d.ReadyDelay, "longest time from IP assignment to joining the endpoints"),
		O("grace", "grace", d.Grace, "longest a deleted pod keeps running (and its IP) off the endpoints"),
		O("job_workloads", "job-workloads", d.JobWorkloads, "job workloads (pods that complete and stay in the API)"),
		O("job_every", "job-every", d.JobEvery, "mean time between two pods of a job workload"),
		O("job_run_min", "job-run-min", d.JobRunMin, "shortest job run"),
		O("job_run_max", "job-run-max", d.JobRunMax, "longest job run"),
		O("job_ttl", "job-ttl", d.JobTTL, "how long a completed job pod stays in the API, its IP shown"),
		O("call_rate", "call-rate", f(d.CallRate), "connections per second per backend or job pod"),
		O("gateway_call_rate", "gateway-call-rate", f(d.GatewayCallRate), "connections per second per gateway pod"),
		O("service_fraction", "service-fraction", f(d.ServiceFraction), "fraction of calls dialling the service's cluster IP"),
		O("external_fraction", "external-fraction", f(d.ExternalFraction), "fraction of backend calls to external CIDRs"),
		O("stale_fraction", "stale-fraction", f(d.StaleFraction), "fraction of calls to a pod deleted in the last 10s (stale endpoints)"),
		O("short_mean", "short-mean", d.ShortMean, "mean length of a short connection"),
		O("long_fraction", "long-fraction", f(d.LongFraction), "fraction of long connections (interim records)"),
		O("long_min", "long-min", d.LongMin, "shortest long connection"),
		O("long_max", "long-max", d.LongMax, "longest long connection"),
		O("clock_skew", "clock-skew", d.ClockSkew, "largest node clock offset"),
		O("flush_interval", "flush-interval", d.FlushInterval, "exporter flush interval"),
		O("flush_jitter", "flush-jitter", f(d.FlushJitter), "largest tick shift, as a fraction of the interval (< 0.5)"),
		O("transport_min", "transport-min", d.TransportMin, "shortest exporter-to-collector delay"),
		O("transport_max", "transport-max", d.TransportMax, "longest exporter-to-collector delay"),
		O("batch_loss", "batch-loss", f(d.BatchLoss), "fraction of batches lost"),
		O("batch_reorder", "batch-reorder", f(d.BatchReorder), "fraction of batches delayed by up to a flush interval"),
		O("final_flush_loss", "final-flush-loss", f(d.FinalFlushLoss), "fraction of pods killed before their exporter's last flush"),
		O("event_delay_min", "event-delay-min", d.EventDelayMin, "shortest Kubernetes event delay"),
		O("event_delay_typical", "event-delay-typical", d.EventDelayTypical, "longest delay of an ordinary event"),
		O("event_delay_max", "event-delay-max", d.EventDelayMax, "longest delay of a tail event"),
		O("event_tail", "event-tail", f(d.EventTail), "fraction of events delayed past event-delay-typical"),
		O("event_loss", "event-loss", f(d.EventLoss), "fraction of watch events lost to a watch failure (a relist follows)"),
		O("resync_interval", "resync-interval", d.ResyncInterval, "time between the watcher's resyncs"),
		O("resync_lag", "resync-lag", d.ResyncLag, "a resync extends claims to this long before the tick"),
		O("relist_latency", "relist-latency", d.RelistLatency, "longest time from a watch failure to the relist"),
		O("event_margin", "event-margin", d.EventMargin, "a watch event's claim ends this long before its receipt (0: sonar/kube's rule)"),
		O("merge_gap", "merge-gap", d.MergeGap, "the ownership index's merge gap"),
		O("deadline", "deadline", d.Deadline, "a record's deadline after arrival (0: two flush intervals)"),
	}
	var cfg sim.Config
	if _, err := settings.Load("attribution-bench", args, options, &cfg); err != nil {
		return sim.Config{}, err
	}
	return cfg, cfg.Validate()
}
