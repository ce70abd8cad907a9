package bus_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

// logLines decodes the JSON log lines written to out so far.
func logLines(t *testing.T, out *servicetest.Buffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// waitLine waits for a line of out with message msg and returns it.
func waitLine(t *testing.T, out *servicetest.Buffer, msg string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range logLines(t, out) {
			if l["msg"] == msg {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line %q in:\n%s", msg, out.String())
	return nil
}

// TestLogEvents: a broker restart and a permission violation show up as
// JSON log lines (warn on the loss, info on the reconnect, error for the
// server's asynchronous error), not as nats.go's plain text on stderr.
func TestLogEvents(t *testing.T) {
	t.Run("restart", func(t *testing.T) {
		srv := natstest.Start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		js, err := bus.Connect(ctx, config.NATS{URL: srv.URL()}, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer js.Conn().Close()
		var out servicetest.Buffer
		bus.LogEvents(js.Conn(), slog.New(slog.NewJSONHandler(&out, nil)))
		srv.Restart()
		if l := waitLine(t, &out, "nats disconnected"); l["level"] != "WARN" || l["err"] == "" {
			t.Errorf("disconnect line %v; want WARN with the error", l)
		}
		if l := waitLine(t, &out, "nats reconnected"); l["level"] != "INFO" || l["url"] != srv.URL() || l["reconnects"] != float64(1) {
			t.Errorf("reconnect line %v; want INFO with url %s and 1 reconnect", l, srv.URL())
		}
	})
	t.Run("permission violation", func(t *testing.T) {
		ns, _ := inboxServer(t, "svc")
		t.Setenv("GF_TEST_NATS_PASSWORD", "svc-pw")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		js, err := bus.Connect(ctx, config.NATS{URL: ns.ClientURL(), User: "svc", PasswordEnv: "GF_TEST_NATS_PASSWORD"}, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer js.Conn().Close()
		var out servicetest.Buffer
		bus.LogEvents(js.Conn(), slog.New(slog.NewJSONHandler(&out, nil)))
		if _, err := js.Conn().SubscribeSync("gerrit.raw"); err != nil {
			t.Fatal(err)
		}
		l := waitLine(t, &out, "nats error")
		if l["level"] != "ERROR" || !strings.Contains(l["err"].(string), `Permissions Violation for Subscription to "gerrit.raw"`) {
			t.Errorf("error line %v; want ERROR naming the refused subscription", l)
		}
		if strings.Contains(out.String(), "svc-pw") {
			t.Error("the log holds the password")
		}
	})
}
