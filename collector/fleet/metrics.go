package fleet

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers every collector on reg, or none: on an error it unregisters those it registered,
// so a failed constructor leaves the registry as it was. what names the metrics in the error.
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, r := range cs[:i] {
				reg.Unregister(r)
			}
			return fmt.Errorf("register %s metrics: %w", what, err)
		}
	}
	return nil
}
