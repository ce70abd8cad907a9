// Package servicetest runs a service's run function the way main does, for
// the services' main_test.go: config file, free port, readiness, drain.
package servicetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WriteConfig writes a config file and returns its path.
func WriteConfig(t testing.TB, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gerritflow.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// RunFunc is a service's run(ctx, args, getenv).
type RunFunc func(ctx context.Context, args []string, getenv func(string) string) error

// Start runs fn in a goroutine and waits until http://addr/readyz answers 200.
// The returned stop cancels the context and returns run's error; it fails the
// test if run does not return within 30s (a drain that hangs).
func Start(t testing.TB, fn RunFunc, args []string, getenv func(string) string, addr string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx, args, getenv) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run returned before ready: %v", err)
		default:
		}
		if ready(addr) {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("http://%s/readyz not ready after 30s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var stopped bool
	var result error
	stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
		case <-time.After(30 * time.Second):
			result = fmt.Errorf("run did not return 30s after cancel")
			t.Error(result)
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func ready(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Env returns a getenv over m.
func Env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Buffer is a bytes.Buffer that a service's goroutines (or a child process's
// output) may write while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
