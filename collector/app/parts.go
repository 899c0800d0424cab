package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/collector/pipeline"
)

// fleetParts are the outputs and the ownership sharing of fleet mode; empty on one machine.
type fleetParts struct {
	publishers []pipeline.Publisher
	sharer     pipeline.Sharer
}

// startSonar prepares the ownership index: in process, restored from the data directory, with the CIDR
// table; it returns the HTTP handler that serves the query API and lookups.
func (a *App) startSonar(reg prometheus.Registerer) (http.Handler, error) {
	return nil, nil
}

// startFleet connects the fleet outputs the config names.
func (a *App) startFleet(reg prometheus.Registerer) (fleetParts, error) {
	return fleetParts{}, nil
}
