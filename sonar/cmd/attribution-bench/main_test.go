package main

import (
	"strings"
	"testing"
	"time"

	"github.com/flowlens/flowlens/sonar/sim"
)

func TestLoadDefaults(t *testing.T) {
	cfg, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != sim.Defaults() {
		t.Errorf("no flags: %+v, want the defaults %+v", cfg, sim.Defaults())
	}
}

func TestLoadFlags(t *testing.T) {
	cfg, err := load([]string{"--seed=7", "--batch-loss=0.25", "--duration=1m", "--event-margin=8s", "--pool-size=60"})
	if err != nil {
		t.Fatal(err)
	}
	want := sim.Defaults()
	want.Seed, want.BatchLoss, want.Duration, want.EventMargin, want.PoolSize = 7, 0.25, time.Minute, 8*time.Second, 60
	if cfg != want {
		t.Errorf("flags: %+v, want %+v", cfg, want)
	}
	t.Setenv("FLOWLENS_EVENT_LOSS", "0.5")
	if cfg, err = load(nil); err != nil || cfg.EventLoss != 0.5 {
		t.Errorf("FLOWLENS_EVENT_LOSS=0.5: event loss %v, err %v", cfg.EventLoss, err)
	}
}

func TestLoadRejects(t *testing.T) {
	for _, args := range [][]string{{"--batch-loss=2"}, {"--batch-loss=lots"}, {"--nodes=0"}, {"--no-such-flag"}} {
		if _, err := load(args); err == nil {
			t.Errorf("%v: accepted", args)
		} else if strings.TrimSpace(err.Error()) == "" {
			t.Errorf("%v: empty error", args)
		}
	}
}
