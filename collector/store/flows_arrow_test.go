//go:build duckdb_arrow

package store

import "testing"

// TestArrowPath runs the write tests with every write through Arrow: the others send their small
// writes through the appender.
func TestArrowPath(t *testing.T) {
	defer func(n int) { arrowMinRows = n }(arrowMinRows)
	arrowMinRows = 0
	for name, f := range map[string]func(*testing.T){
		"WriteReopen": TestWriteReopen, "MergeInterimAndFinal": TestMergeInterimAndFinal,
		"PendingRoundTripAndResolve": TestPendingRoundTripAndResolve, "BadWritesKeepEarlierData": TestBadWritesKeepEarlierData,
	} {
		t.Run(name, f)
	}
}
