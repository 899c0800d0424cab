package exporters

import (
	"encoding/json"
	"net/http"
)

// Mount serves the fleet view on mux:
//
//	GET /api/v1/exporters  {"exporters": [Exporter, ...]}, sorted by id
//	GET /api/v1/ingest     Ingest
func (r *Registry) Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/exporters", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, struct {
			Exporters []Exporter `json:"exporters"`
		}{r.Exporters()})
	})
	mux.HandleFunc("GET /api/v1/ingest", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, r.Ingest()) })
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only plain fields and maps of strings: cannot fail, but answer rather than panic
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(body, '\n')) // a client gone before its answer is not ours to report
}
