package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/streams"
)

// Services are the five stages, in pipeline order.
var Services = []string{"bridge", "parser", "trigger", "monitor", "voter"}

// Viewers only read state: the status page (services/status).
var Viewers = []string{"status"}

// natsUser is the NATS user a service or viewer connects as.
func natsUser(name string) string {
	if slices.Contains(Viewers, name) {
		return "status-reader"
	}
	return name
}

// root is the workspace root (the folder holding go.work).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.work")); err != nil {
		t.Fatalf("workspace root: %v", err)
	}
	return dir
}

// path joins elements to the workspace root.
func path(t *testing.T, elem ...string) string {
	t.Helper()
	return filepath.Join(append([]string{root(t)}, elem...)...)
}

func read(t *testing.T, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(path(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testPasswords sets a known password for every NATS user in the process
// environment (the server configuration reads them from there) and returns
// them by user.
func testPasswords(t *testing.T) map[string]string {
	t.Helper()
	pw := map[string]string{}
	for _, u := range natsauth.Users {
		pw[u] = "test-" + strings.ReplaceAll(u, "-", "") + "-0123456789abcdef"
		t.Setenv(natsauth.PasswordEnv(u), pw[u])
	}
	return pw
}

func loadStreams(t *testing.T) *streams.Set {
	t.Helper()
	set, err := streams.Load()
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// parseConfig checks a gerritflow config document as the services do.
func parseConfig(t *testing.T, what string, data []byte) *config.Config {
	t.Helper()
	c, err := config.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: not a valid gerritflow config: %v", what, err)
	}
	return c
}

// splitYAML splits a multi-document YAML stream on its "---" lines and
// returns the documents that hold more than comments.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if l := strings.TrimRight(line, " \r\n"); l == "---" || strings.HasPrefix(l, "--- ") {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

func stripComments(d []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(d), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

// serverOptions are nats-server's parsed options.
type serverOptions = server.Options
