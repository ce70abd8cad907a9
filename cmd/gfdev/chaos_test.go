package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/chaos"
)

// TestChaos is `make chaos` in short: a few hundred Gerrit events (new
// changes, superseding patch sets, rechecks, abandons, merges, chatter,
// unconfigured projects, duplicate and garbage records) through two replicas
// of every service while processes are killed with SIGKILL, the nats-server
// restarts on its store, Jenkins answers 503 or hangs and Gerrit answers 500.
// Every kind of fault strikes at least once. Then nothing may be lost, built
// twice or voted twice (docs/reliability.md lists the invariants).
func TestChaos(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	seed := time.Now().UnixNano() % 1_000_000
	res, err := chaos.Run(ctx, chaos.Options{
		Events: 300, Seed: seed, Play: 60 * time.Second,
		// Often enough that every kind strikes within the minute (the longest
		// first interval, 1.5 × the mean, plus a Jenkins 503 spell, stays under it).
		Faults: chaos.Faults{Kill: 3 * time.Second, KillMidBuild: 20 * time.Second, MonitorsDown: 30 * time.Second, NATS: 25 * time.Second, Jenkins: 12 * time.Second, Gerrit: 15 * time.Second},
		Settle: 4 * time.Minute,
		Dir:    filepath.Join(t.TempDir(), "chaos"),
		Log:    log,
	})
	var report bytes.Buffer
	if res != nil {
		chaos.Report(&report, res)
	}
	if err != nil {
		t.Fatalf("chaos run (seed %d): %v\n%s", seed, err, report.String())
	}
	kinds := map[string]int{}
	for _, f := range res.Faults {
		kinds[f.Kind]++
	}
	for _, k := range chaos.FaultOrder {
		if kinds[k] == 0 {
			t.Errorf("no %q fault was injected", k)
		}
	}
	if n := res.Breaches(); n > 0 || t.Failed() {
		t.Fatalf("seed %d: %d breaches (run it again: go run ./cmd/gfdev chaos --events 300 --duration 60s --seed %d)\n%s",
			seed, n, seed, report.String())
	}
	t.Logf("seed %d: %s", seed, res.Line())
}
