// Package proto holds flowlens's wire schema: flowlens/flow/v1 (flow records, batches, the ingest service)
// and flowlens/sonar/v1 (ownership ranges and lookups). The generated Go is committed; `make generate`
// rebuilds it with scripts/gen-proto.sh, and TestGeneratedUpToDate fails when it is stale.
package proto
