package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// TestConnectAsConfiguredUser logs in to a nats-server that has users, with
// the user and password the configuration names (user_env, password_env,
// password_file), and checks that a wrong password is refused without the
// password showing in the error.
func TestConnectAsConfiguredUser(t *testing.T) {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "parser", Password: "parser-pw"}, {Username: "voter", Password: "voter-pw"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte("voter-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GF_TEST_NATS_USER", "parser")
	t.Setenv("GF_TEST_NATS_PASSWORD", "parser-pw")
	t.Setenv("GF_TEST_WRONG_PASSWORD", "not-the-password")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []config.NATS{
		{URL: ns.ClientURL(), UserEnv: "GF_TEST_NATS_USER", PasswordEnv: "GF_TEST_NATS_PASSWORD"},
		{URL: ns.ClientURL(), User: "voter", PasswordFile: pwFile},
	} {
		js, err := bus.Connect(ctx, c, "test")
		if err != nil {
			t.Fatalf("Connect(%+v) = %v", c, err)
		}
		if got, want := js.Conn().ConnectedUrlRedacted(), ns.ClientURL(); got != want {
			t.Errorf("connected to %s; want %s", got, want)
		}
		js.Conn().Close()
	}

	_, err = bus.Connect(ctx, config.NATS{URL: ns.ClientURL(), User: "parser", PasswordEnv: "GF_TEST_WRONG_PASSWORD"}, "test")
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("Connect with a wrong password = %v; want an authorization error", err)
	}
	if err != nil && strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("the error shows the password: %v", err)
	}
	if _, err := bus.Connect(ctx, config.NATS{URL: ns.ClientURL(), User: "parser", PasswordEnv: "GF_TEST_UNSET"}, "test"); err == nil || !strings.Contains(err.Error(), "nats.password_env: environment variable GF_TEST_UNSET") {
		t.Errorf("Connect with the password variable unset = %v; want an error naming nats.password_env", err)
	}
}
