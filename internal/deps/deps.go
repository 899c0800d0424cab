//go:build tools

// Package deps pins modules the transport work is about to use, until their first import lands.
package deps

import (
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/quic-go/quic-go/http3"
)
