// Package udpwire is the datagram format of the UDP transport: a FlowBatch, compressed when that makes it
// smaller, behind a header that carries the exporter's datagram sequence number, and under an HMAC that
// lets the collector drop a forged datagram before it parses a byte of it.
//
// A datagram is, in order:
//
//	size  field
//	4     magic "FLU1"
//	8     sequence number, big-endian: 1, 2, 3, ... per exporter, one per datagram
//	1     flags: FlagZstd when the payload is zstd-compressed; no other bit may be set
//	n     payload: a flowlens.flow.v1.FlowBatch in protobuf
//	16    HMAC-SHA256 of everything before it, keyed by the shared secret, truncated to 16 bytes
//
// Both halves use a Codec; the exporter cuts its batches into datagrams with a Splitter.
package udpwire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

const (
	// Magic opens every datagram; it changes with any incompatible change of the format.
	Magic = "FLU1"
	// HeaderSize is magic, sequence number and flags.
	HeaderSize = len(Magic) + 8 + 1
	// TagSize is the truncated HMAC: 128 bits are beyond any forger's reach at datagram rates.
	TagSize = 16
	// Overhead is what the format adds to a payload.
	Overhead = HeaderSize + TagSize
	// MaxDatagram is the largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP).
	MaxDatagram = 65507
	// MaxDecoded bounds a decompressed payload, so a small datagram cannot make the collector allocate
	// without limit. Flow records compress about 2:1, so it leaves room for a full-size datagram at 4:1.
	MaxDecoded = 256 << 10
	// MinKeySize is the shortest HMAC key accepted: 128 bits.
	MinKeySize = 16
	// FlagZstd says the payload is one or more zstd frames.
	FlagZstd byte = 1
)

// Every way Decode can refuse a datagram; Reason names each for metrics.
var (
	ErrShort     = errors.New("datagram too short")
	ErrBadMagic  = errors.New("datagram without the FLU1 magic")
	ErrBadHMAC   = errors.New("datagram hmac does not match")
	ErrTooLarge  = errors.New("datagram too large")
	ErrMalformed = errors.New("malformed datagram")
)

// Reason is the metric label of a Decode error: short, bad_magic, bad_hmac, too_large, malformed, or
// other for an error that is none of them.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrShort):
		return "short"
	case errors.Is(err, ErrBadMagic):
		return "bad_magic"
	case errors.Is(err, ErrBadHMAC):
		return "bad_hmac"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	}
	return "other"
}

// Codec seals and opens datagrams under one key. It is safe for concurrent use; Close releases it.
type Codec struct {
	key  []byte
	macs sync.Pool // hash.Hash: keyed HMACs, reused because keying one costs two SHA-256 blocks
	bufs sync.Pool // *[]byte: decompression output; proto.Unmarshal copies out of it, so it can go back at once
	enc  *zstd.Encoder
	dec  *zstd.Decoder
}

// NewCodec makes a Codec for key, which must be at least MinKeySize bytes; the key is copied.
func NewCodec(key []byte) (*Codec, error) {
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("udp hmac key: %d bytes, want at least %d", len(key), MinKeySize)
	}
	// No checksum in the frame: the HMAC already covers every byte. Frames are a few KiB, so a 32 KiB
	// window holds all of one and keeps the encoder small.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(32<<10), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxDecoded),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	c := &Codec{key: append([]byte(nil), key...), enc: enc, dec: dec}
	c.macs.New = func() any { return hmac.New(sha256.New, c.key) }
	c.bufs.New = func() any { b := make([]byte, 0, 8<<10); return &b }
	return c, nil
}

// Close releases the compressor and decompressor; the Codec must not be used after.
func (c *Codec) Close() {
	c.enc.Close()
	c.dec.Close()
}

// Append marshals b and appends it to dst as one datagram with sequence number seq.
func (c *Codec) Append(dst []byte, seq uint64, b *flowv1.FlowBatch) ([]byte, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
	if err != nil {
		return dst, fmt.Errorf("marshal batch %d: %w", b.GetSeq(), err)
	}
	return c.Seal(dst, seq, payload)
}

// Seal appends to dst the datagram with sequence number seq that carries payload, a marshalled
// FlowBatch: compressed if that is shorter, then signed. A datagram larger than MaxDatagram, or a payload
// that Decode would refuse to decompress, is ErrTooLarge.
func (c *Codec) Seal(dst []byte, seq uint64, payload []byte) ([]byte, error) {
	if len(payload) > MaxDecoded {
		return dst, fmt.Errorf("seal datagram %d: payload of %d bytes over %d: %w", seq, len(payload), MaxDecoded, ErrTooLarge)
	}
	start := len(dst)
	dst = append(dst, Magic...)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, 0)
	body := len(dst)
	dst = c.enc.EncodeAll(payload, dst)
	if len(dst)-body < len(payload) {
		dst[body-1] = FlagZstd
	} else {
		dst = append(dst[:body], payload...)
	}
	if n := len(dst) - start + TagSize; n > MaxDatagram {
		return dst[:start], fmt.Errorf("seal datagram %d: %d bytes over %d: %w", seq, n, MaxDatagram, ErrTooLarge)
	}
	var sum [sha256.Size]byte
	return append(dst, c.mac(dst[start:], sum[:0])[:TagSize]...), nil
}

// mac appends the full HMAC of msg to sum.
func (c *Codec) mac(msg, sum []byte) []byte {
	m := c.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(msg)
	sum = m.Sum(sum)
	c.macs.Put(m)
	return sum
}

// Decode checks dgram and parses its batch into into (which it resets), returning the datagram's sequence
// number. The length, magic and HMAC are checked before anything else is read, and a decompressed payload
// is bounded by MaxDecoded. into does not keep any reference to dgram.
func (c *Codec) Decode(dgram []byte, into *flowv1.FlowBatch) (uint64, error) {
	n := len(dgram)
	switch {
	case n < Overhead:
		return 0, fmt.Errorf("%w: %d bytes, the header and hmac alone are %d", ErrShort, n, Overhead)
	case n > MaxDatagram:
		return 0, fmt.Errorf("%w: %d bytes over %d", ErrTooLarge, n, MaxDatagram)
	case string(dgram[:len(Magic)]) != Magic:
		return 0, fmt.Errorf("%w: starts %q", ErrBadMagic, dgram[:len(Magic)])
	}
	var sum [sha256.Size]byte
	if !hmac.Equal(c.mac(dgram[:n-TagSize], sum[:0])[:TagSize], dgram[n-TagSize:]) {
		return 0, ErrBadHMAC
	}
	seq := binary.BigEndian.Uint64(dgram[len(Magic):])
	if seq == 0 {
		return 0, fmt.Errorf("%w: sequence number 0", ErrMalformed)
	}
	payload := dgram[HeaderSize : n-TagSize]
	switch flags := dgram[HeaderSize-1]; flags {
	case 0:
	case FlagZstd:
		bp := c.bufs.Get().(*[]byte)
		defer c.bufs.Put(bp)
		out, err := c.dec.DecodeAll(payload, (*bp)[:0])
		if err == nil {
			*bp = out // keep the buffer as it grew: MaxDecoded bounds it
		}
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return 0, fmt.Errorf("datagram %d: %w: decompressed payload over %d bytes", seq, ErrTooLarge, MaxDecoded)
		}
		if err != nil {
			return 0, fmt.Errorf("datagram %d: %w: decompress payload: %w", seq, ErrMalformed, err)
		}
		payload = out
	default:
		return 0, fmt.Errorf("datagram %d: %w: unknown flags %#x", seq, ErrMalformed, flags)
	}
	if err := proto.Unmarshal(payload, into); err != nil {
		return 0, fmt.Errorf("datagram %d: %w: batch: %w", seq, ErrMalformed, err)
	}
	if into.ExporterId == "" {
		// The exporter id keys the collector's loss accounting: a batch without one cannot be placed.
		return 0, fmt.Errorf("datagram %d: %w: batch without exporter_id", seq, ErrMalformed)
	}
	return seq, nil
}

// ReadKey reads the shared HMAC key from path: the file's bytes, surrounding white space trimmed, so that
// `head -c 32 /dev/urandom | base64 > udp.key` makes one. The exporter and the collector both read it so.
func ReadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("udp key: %w", err)
	}
	return bytes.TrimSpace(b), nil
}
