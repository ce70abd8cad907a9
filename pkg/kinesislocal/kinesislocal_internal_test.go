package kinesislocal

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

// A port taken between picking and binding: the emulator exits with
// EADDRINUSE, Start retries with new ports.
func TestStartRetriesPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	calls := 0
	pickPorts = func() (int, int, error) {
		calls++
		p, q, err := freePorts()
		if calls == 1 {
			p = busyPort
		}
		return p, q, err
	}
	defer func() { pickPorts = freePorts }()

	var log servicetest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := Start(ctx, Options{Streams: map[string]int{"s": 1}, Log: &log})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer e.Stop()
	if calls != 2 {
		t.Errorf("picked ports %d times, want 2", calls)
	}
	if strings.HasSuffix(e.Endpoint(), ":"+strconv.Itoa(busyPort)) {
		t.Errorf("endpoint %s uses the busy port", e.Endpoint())
	}
	if !strings.Contains(log.String(), "EADDRINUSE") {
		t.Errorf("the first attempt's EADDRINUSE is not in the log:\n%s", log.String())
	}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
}

// An emulator that dies at start: its output is in the error, quickly.
func TestStartSurfacesOutputWhenItDies(t *testing.T) {
	t0 := time.Now()
	e, err := Start(context.Background(), Options{Env: map[string]string{"SHARD_LIMIT": "not-a-number"}})
	if err == nil {
		e.Stop()
		t.Fatal("Start succeeded with SHARD_LIMIT=not-a-number")
	}
	if !strings.Contains(err.Error(), "SHARD_LIMIT") || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("error does not carry the emulator's output: %v", err)
	}
	t.Logf("failed after %v: %.200s", time.Since(t0).Round(time.Millisecond), err)
}

func TestStartBadOptions(t *testing.T) {
	ctx := context.Background()
	if _, err := Start(ctx, Options{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "package-lock.json") {
		t.Errorf("Start in an empty dir: %v", err)
	}
	if _, err := Start(ctx, Options{Streams: map[string]int{"a,b": 1}}); err == nil {
		t.Errorf("Start accepted stream name a,b")
	}
	if _, err := Start(ctx, Options{Streams: map[string]int{"a": 0}}); err == nil {
		t.Errorf("Start accepted 0 shards")
	}
	if got, err := initializeStreams(map[string]int{"b": 1, "a": 3}); err != nil || got != "a:3,b:1" {
		t.Errorf("initializeStreams = %q, %v", got, err)
	}
}

func TestDefaultDir(t *testing.T) {
	d, err := defaultDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "package-lock.json")); err != nil {
		t.Fatalf("defaultDir %s: %v", d, err)
	}
	if _, err := lockedVersion(d); err != nil {
		t.Fatal(err)
	}
}

func TestNewClient(t *testing.T) {
	ctx := context.Background()
	if _, err := NewClient(ctx, "us-east-1", "127.0.0.1:4568", nil); err == nil {
		t.Errorf("accepted an endpoint without scheme")
	}
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	if _, err := NewClient(ctx, "", "", nil); err == nil {
		t.Errorf("accepted no region")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	if _, err := NewClient(ctx, "eu-west-1", "", nil); err == nil {
		t.Errorf("accepted no credentials")
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	c, err := NewClient(ctx, "eu-west-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Options(); o.Region != "eu-west-1" || o.BaseEndpoint != nil || o.Retryer.MaxAttempts() != 5 {
		t.Errorf("options: region %s, endpoint %v, attempts %d", o.Region, o.BaseEndpoint, o.Retryer.MaxAttempts())
	}
}
