// Package natsauth loads gerritflow's NATS server configuration
// (deploy/nats) for tests, and observes what a user may not do: it is the
// test helper shared by deploy's own tests and the end-to-end test that runs
// the whole pipeline with least-privilege users (cmd/gfdev).
package natsauth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Account is the account every gerritflow user belongs to.
const Account = "GERRITFLOW"

// Users of deploy/nats/accounts.conf: one per service, the admin (gfctl
// provision, replay, NACK) and a read-only status user.
var Users = []string{"bridge", "parser", "trigger", "monitor", "voter", "gfctl-admin", "status-reader"}

// PasswordEnv is the environment variable that holds user's password in
// the server's environment ("parser" -> PARSER_NATS_PASSWORD).
func PasswordEnv(user string) string {
	return strings.ToUpper(strings.ReplaceAll(user, "-", "_")) + "_NATS_PASSWORD"
}

// Dir returns deploy/nats, found from the working directory upwards (tests
// run in their package's folder).
func Dir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, "deploy", "nats"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("natsauth: no go.work above the working directory")
		}
		dir = parent
	}
}

// Load parses a server configuration file (with its includes) as
// nats-server does. The *_NATS_PASSWORD variables it references must be set
// in the process environment (tests: t.Setenv).
func Load(path string) (*server.Options, error) {
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("natsauth: %s: %w", path, err)
	}
	return opts, nil
}

// ForTest adapts options loaded from a deployment file to a server inside a
// test: loopback on a random port, JetStream on storeDir, no monitoring
// port, no cluster, no signal handling. Accounts, users and permissions stay
// exactly as the file has them.
func ForTest(o *server.Options, storeDir string) *server.Options {
	c := o.Clone()
	c.Host, c.Port = "127.0.0.1", server.RANDOM_PORT
	c.HTTPHost, c.HTTPPort = "", 0
	c.Cluster = server.ClusterOpts{}
	c.Routes = nil
	c.JetStream, c.StoreDir = true, storeDir
	c.NoLog, c.NoSigs = true, true
	return c
}

// UserURL returns clientURL (nats://host:port) with user and password in it.
func UserURL(clientURL, user, password string) string {
	return strings.Replace(clientURL, "nats://", "nats://"+user+":"+password+"@", 1)
}

// Client is a connection as one user that records the permission
// violations the server reports to it.
type Client struct {
	User string
	NC   *nats.Conn
	JS   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

// Connect connects to url (with the user's credentials in it) as user, with
// the user's own inbox prefix (Inbox), as pkg/bus.Connect does.
func Connect(url, user string) (*Client, error) {
	return ConnectInbox(url, user, Inbox(user))
}

// Inbox is the inbox prefix pkg/bus.Connect uses for user, the one
// permissions.conf lets user subscribe to.
func Inbox(user string) string { return "_INBOX_" + user }

// ConnectInbox is Connect with another inbox prefix (to show a refusal).
func ConnectInbox(url, user, inbox string) (*Client, error) {
	c := &Client{User: user}
	nc, err := nats.Connect(url, nats.Name("natsauth-"+user), nats.MaxReconnects(-1), nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("natsauth: connect as %s: %w", user, err)
	}
	c.NC = nc
	if c.JS, err = jetstream.New(nc); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() { c.NC.Close() }

// Violations returns the violations reported so far.
func (c *Client) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.violations...)
}

// Publish and Subscribe name the violation the server reports when a user
// publishes to, or subscribes to, a subject it is not allowed.
func Publish(subject string) string {
	return fmt.Sprintf("Permissions Violation for Publish to %q", subject)
}
func Subscribe(subject string) string {
	return fmt.Sprintf("Permissions Violation for Subscription to %q", subject)
}

// Denied runs op (which is expected to fail) and waits up to 5s for the
// server to report the violation want (Publish or Subscribe to a subject).
// op gets a context that ends once the violation arrived, so a request that
// would wait for its timeout returns at once. Denied returns op's error and
// the violation seen ("" if none).
func (c *Client) Denied(want string, op func(ctx context.Context) error) (opErr error, violation string) {
	before := len(c.Violations())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for violation == "" {
		select {
		case <-ctx.Done():
			return <-done, ""
		case <-tick.C:
		}
		for _, v := range c.Violations()[before:] {
			if strings.Contains(v, want) {
				violation = v
			}
		}
	}
	cancel()
	return <-done, violation
}
