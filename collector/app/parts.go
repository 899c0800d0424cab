package app

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api"
	"github.com/flowlens/flowlens/collector/exporters"
	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/fleet/kafkaflows"
	"github.com/flowlens/flowlens/collector/fleet/natsflows"
	"github.com/flowlens/flowlens/collector/fleet/ownership"
	"github.com/flowlens/flowlens/collector/pipeline"
	sonarapi "github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/cidrfile"
	"github.com/flowlens/flowlens/sonar/index"
	"github.com/flowlens/flowlens/sonar/persist"
)

// fleetParts are the outputs and the ownership sharing of fleet mode; empty on one machine.
type fleetParts struct {
	publishers []pipeline.Publisher
	sharer     pipeline.Sharer
}

// startSonar prepares the ownership index in process: restored from its snapshot and claim log under
// the data directory (which it then keeps), with the CIDR table if one is configured. It returns the
// HTTP handler that serves the query API and sonar's lookups, and the sharer that logs heartbeats.
func (a *App) startSonar(reg prometheus.Registerer) (http.Handler, pipeline.Sharer, error) {
	plog, err := persist.Open(filepath.Join(a.cfg.DataDir, "sonar"), a.idx, a.log, reg)
	if err != nil {
		return nil, nil, err
	}
	a.closers = append(a.closers, plog.Close)
	r := plog.Replayed()
	a.log.Info("ownership index restored", zap.Int("snapshot_ranges", r.SnapshotRanges), zap.Int("claims", r.Claims),
		zap.Strings("corrupt", r.Corrupt))
	if path := a.cfg.Attribution.CIDRFile; path != "" {
		f, err := cidrfile.Load(path, a.idx, a.log, reg)
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := f.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("cidr file watch", zap.Error(err))
			}
		}()
		a.closers = append(a.closers, func() error { cancel(); <-done; return nil })
	}
	lookups := sonarapi.NewHTTP(a.idx, a.log, sonarapi.WithMetrics(sonarapi.NewMetrics(reg)))
	return api.Handler(a.store, lookups.ServeHTTP, a.log), logSharer{plog}, nil
}

// logSharer appends heartbeats to the index's claim log, which syncs them in groups: a crash loses at
// most the last sync interval of heartbeats, never a flow (those are in the store).
type logSharer struct{ l *persist.Log }

func (s logSharer) Share(claims []index.Claim) { _ = s.l.Append(claims) } // errors are counted by the log

// sharers passes heartbeats to each of several sharers.
type sharers []pipeline.Sharer

func (ss sharers) Share(claims []index.Claim) {
	for _, s := range ss {
		s.Share(claims)
	}
}

// storeFleetFlows runs a consumer that stores the other replicas' flows in this replica's store, until
// the app closes.
func (a *App) storeFleetFlows(js jetstream.JetStream, replica string, reg prometheus.Registerer) error {
	c, err := natsflows.NewConsumer(js, natsflows.ConsumerConfig{Stream: a.cfg.NATS.FlowsStream, Origin: replica}, a.store, a.log, reg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			a.log.Error("storing the fleet's flows", zap.Error(err))
		}
	}()
	a.closers = append(a.closers, func() error { cancel(); <-done; return nil })
	return nil
}

// startFleet connects the fleet outputs the config names: enriched flows to JetStream and Kafka, and
// the ownership stream through which replicas share heartbeats. It waits until this replica has
// replayed the ownership stream, so its first lookups already know what its peers learned.
func (a *App) startFleet(reg prometheus.Registerer) (fleetParts, error) {
	var parts fleetParts
	replica := a.cfg.Replica
	if replica == "" {
		replica, _ = os.Hostname()
	}
	if url := a.cfg.NATS.URL; url != "" {
		nc, js, err := fleet.Connect(url, "flow-collector "+replica, a.log)
		if err != nil {
			return parts, err
		}
		a.closers = append(a.closers, func() error { return nc.Drain() })
		ctx := context.Background()
		pub, err := natsflows.New(ctx, js, natsflows.Config{StreamSettings: fleet.StreamSettings{Stream: a.cfg.NATS.FlowsStream},
			Origin: replica}, a.log, reg)
		if err != nil {
			return parts, err
		}
		parts.publishers = append(parts.publishers, pub)
		if a.cfg.NATS.StoreFleetFlows {
			if err := a.storeFleetFlows(js, replica, reg); err != nil {
				return parts, err
			}
		}
		sh, err := ownership.New(js, ownership.Config{Replica: replica,
			StreamSettings: fleet.StreamSettings{Stream: a.cfg.NATS.OwnershipStream, MaxAge: a.cfg.Attribution.MaxAge}}, a.idx, a.log, reg)
		if err != nil {
			return parts, err
		}
		parts.sharer = sh
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := sh.Run(rctx); err != nil && rctx.Err() == nil {
				a.log.Error("ownership stream", zap.Error(err))
			}
		}()
		a.closers = append(a.closers, func() error { cancel(); <-done; return nil })
		select {
		case <-sh.Synced():
		case <-done:
			return parts, fmt.Errorf("ownership stream ended before it was replayed")
		}
		a.log.Info("fleet mode: NATS JetStream", zap.String("url", url), zap.String("replica", replica),
			zap.Bool("store_fleet_flows", a.cfg.NATS.StoreFleetFlows))
	}
	if b := a.cfg.Kafka.Brokers; b != "" {
		prod, err := kafkaflows.New(kafkaflows.Config{Brokers: strings.Split(b, ","), Topic: a.cfg.Kafka.Topic}, a.log, reg)
		if err != nil {
			return parts, err
		}
		a.closers = append(a.closers, func() error { prod.Close(); return nil })
		parts.publishers = append(parts.publishers, prod)
	}
	return parts, nil
}

// fleetView is the registry of the exporters sending here and of the ingest rates, reading the
// pipeline's queue.
func (a *App) fleetView(reg prometheus.Registerer) (*exporters.Registry, error) {
	return exporters.New(exporters.Config{Queue: func() exporters.Queue {
		st := a.pipe.Stats()
		return exporters.Queue{Records: st.Queued, Capacity: a.cfg.QueueRecords, Parked: st.Parked}
	}}, reg)
}
