package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/collector/api"
	"github.com/flowlens/flowlens/collector/pipeline"
	sonarapi "github.com/flowlens/flowlens/sonar/api"
)

// fleetParts are the outputs and the ownership sharing of fleet mode; empty on one machine.
type fleetParts struct {
	publishers []pipeline.Publisher
	sharer     pipeline.Sharer
}

// startSonar prepares the ownership index in process and returns the HTTP handler that serves the
// query API and sonar's lookups over it.
func (a *App) startSonar(reg prometheus.Registerer) (http.Handler, error) {
	lookups := sonarapi.NewHTTP(a.idx, a.log, sonarapi.WithMetrics(sonarapi.NewMetrics(reg)))
	return api.Handler(a.store, lookups.ServeHTTP, a.log), nil
}

// startFleet connects the fleet outputs the config names.
func (a *App) startFleet(reg prometheus.Registerer) (fleetParts, error) {
	return fleetParts{}, nil
}
