package fleet

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamSettings is the part of a JetStream output's config that describes its stream. Zero values take the
// defaults given to WithDefaults.
type StreamSettings struct {
	// Stream is the stream's name; it is created, or updated to these settings, when the output starts.
	Stream string `mapstructure:"stream"`
	// SubjectPrefix: the stream takes <prefix>.> and messages go to <prefix>.<tokens...>.
	SubjectPrefix string `mapstructure:"subject_prefix"`
	// MaxAge drops messages older than this. Default 24h.
	MaxAge time.Duration `mapstructure:"max_age"`
	// MaxBytes caps the stream, dropping the oldest messages first. Default -1: no cap (the server's own
	// storage limit still applies).
	MaxBytes int64 `mapstructure:"max_bytes"`
	// Replicas of the stream in a NATS cluster. Default 1.
	Replicas int `mapstructure:"replicas"`
}

// WithDefaults fills the zero fields, with name and prefix for the stream and its subjects.
func (s StreamSettings) WithDefaults(name, prefix string) StreamSettings {
	if s.Stream == "" {
		s.Stream = name
	}
	if s.SubjectPrefix == "" {
		s.SubjectPrefix = prefix
	}
	if s.MaxAge == 0 {
		s.MaxAge = 24 * time.Hour
	}
	if s.MaxBytes == 0 {
		s.MaxBytes = -1
	}
	if s.Replicas == 0 {
		s.Replicas = 1
	}
	return s
}

// Config is the stream's JetStream config: file storage, limits retention, the oldest dropped first.
func (s StreamSettings) Config(description string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        s.Stream,
		Description: description,
		Subjects:    []string{s.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      s.MaxAge,
		MaxBytes:    s.MaxBytes,
		Replicas:    s.Replicas,
	}
}

// WithTimeout bounds ctx by d unless it has a deadline already.
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
