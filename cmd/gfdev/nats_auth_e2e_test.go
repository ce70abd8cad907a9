package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/streams"
)

// TestNATSAuthLeastPrivilege runs the whole pipeline against a nats-server
// configured from deploy/nats/nats-server.conf (its account, users and
// permissions as written, passwords from the environment), each service
// connected as its own user and the stack as gfctl-admin. A change gets its
// vote: every service works with only its own permissions (and the status
// page with the read-only status-reader). Then, with the
// services' own credentials, what they must not do is refused.
func TestNATSAuthLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	dir, err := natsauth.Dir()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats-server.conf")
	pw := map[string]string{}
	for _, u := range natsauth.Users {
		pw[u] = randomHex(t)
		t.Setenv(natsauth.PasswordEnv(u), pw[u])
	}
	if _, err := natsauth.Load(conf); err != nil {
		t.Fatal(err)
	}
	s, err := stack.Start(ctx, stack.Options{
		Dir: filepath.Join(t.TempDir(), "dev"),
		Log: log,
		// The server's users and permissions are the deployment's own file,
		// parsed again for every server (the stack may restart it); only the
		// listener and the store are the stack's.
		NATSOptions: func(so *server.Options) {
			o, err := natsauth.Load(conf)
			if err != nil {
				t.Errorf("%v", err)
				return
			}
			o = natsauth.ForTest(o, so.StoreDir)
			o.ServerName, o.Host, o.Port = so.ServerName, so.Host, so.Port
			*so = *o
		},
		AdminURL: func(url string) string { return natsauth.UserURL(url, "gfctl-admin", pw["gfctl-admin"]) },
		ServiceNATS: func(svc, url string) string {
			return fmt.Sprintf("{ url: %q }", natsauth.UserURL(url, svc, pw[svc]))
		},
		// The status page reads KV only: the read-only user.
		ViewerNATS: func(_, url string) string {
			return fmt.Sprintf("{ url: %q }", natsauth.UserURL(url, "status-reader", pw["status-reader"]))
		},
	})
	if err != nil {
		t.Fatalf("start stack with least-privilege users: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stack did not stop cleanly: %v", err)
		}
	})
	// The server reports every refused publish or subscription in its log.
	violations := &serverLog{}
	s.NATS.SetLoggerV2(violations, false, false, false)
	if testing.Verbose() {
		go s.Watch(ctx, os.Stderr)
	}
	s.ScriptJenkins(300 * time.Millisecond)

	t.Run("each service is connected as its own user", func(t *testing.T) {
		connz, err := s.NATS.Connz(&server.ConnzOptions{Username: true, Limit: 1024})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, c := range connz.Conns {
			svc, ok := strings.CutPrefix(c.Name, "gerritflow-")
			if !ok {
				continue
			}
			seen[svc] = true
			user := svc
			if slices.Contains(stack.Viewers, svc) {
				user = "status-reader"
			}
			if c.AuthorizedUser != user || c.Account != natsauth.Account {
				t.Errorf("connection %q is user %q of account %q; want user %s of %s", c.Name, c.AuthorizedUser, c.Account, user, natsauth.Account)
			}
		}
		for _, svc := range stack.Processes() {
			if !seen[svc] {
				t.Errorf("no connection of %s", svc)
			}
		}
	})

	voted := 0 // the change that got its vote
	t.Run("a change gets its vote", func(t *testing.T) {
		c, _, _, err := s.Gerrit.Upload(gerritsim.Upload{Project: "platform/core", Branch: "main", Subject: "Least privilege", Uploader: stack.Developer})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if r := s.Gerrit.ReviewsFor(c); len(r) != 1 || r[0].Input.Labels["Verified"] != 1 {
			t.Fatalf("change %d: reviews %+v; want one Verified +1", c, r)
		}
		quiesce(t, s)
		if n := countMsgs(t, s.JS, "gerritflow.dlq.>"); n != 0 {
			t.Errorf("the DLQ holds %d messages", n)
		}
		voted = c
	})
	if voted == 0 {
		t.FailNow()
	}

	t.Run("no service was refused anything", func(t *testing.T) {
		if v := violations.lines("Violation"); len(v) > 0 {
			t.Errorf("the server refused the services %d times:\n%s", len(v), strings.Join(v, "\n"))
		}
		for _, svc := range stack.Processes() {
			for _, p := range s.Procs(svc) {
				if p.ExitCode() != -1 {
					t.Errorf("%s-%d exited (%d):\n%s", svc, p.Index, p.ExitCode(), p.Tail(20))
				}
				logData, err := os.ReadFile(p.LogPath())
				if err != nil {
					t.Fatal(err)
				}
				for u, secret := range pw {
					if strings.Contains(string(logData), secret) {
						t.Errorf("%s's log holds the NATS password of %s", svc, u)
					}
				}
			}
		}
	})

	// The operator's tools: gfctl as the read-only user, then as the admin.
	gfctl := buildGfctl(ctx, t)
	asUser := func(user string) string { return natsauth.UserURL(s.NATS.ClientURL(), user, pw[user]) }
	t.Run("gfctl reads state as status-reader", func(t *testing.T) {
		if _, _, err := gerritsim.PutEvent(ctx, s.Kinesis.Client(), stack.KinesisStream, "patchset-created", []byte(`{"type":`)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for countMsgs(t, s.JS, "gerritflow.dlq.>") == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the poison record never reached the DLQ")
			}
			time.Sleep(300 * time.Millisecond)
		}
		before := len(violations.lines("Violation"))
		for _, args := range [][]string{{"status", strconv.Itoa(voted)}, {"builds"}, {"dlq", "list"}, {"dlq", "show", "1"}} {
			if out, err := runGfctl(ctx, time.Minute, gfctl, asUser("status-reader"), args...); err != nil {
				t.Errorf("gfctl %s as status-reader: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if v := violations.lines("Violation")[before:]; len(v) > 0 {
			t.Errorf("gfctl as status-reader was refused:\n%s", strings.Join(v, "\n"))
		}
		if out, err := runGfctl(ctx, 10*time.Second, gfctl, asUser("status-reader"), "dlq", "redrive", "--all"); err == nil {
			t.Errorf("gfctl dlq redrive as status-reader succeeded:\n%s", out)
		}
		if v := violations.lines(`"GERRITFLOW/user:status-reader" - Publish Violation`); len(v) == 0 {
			t.Error("the status-reader's redrive was not refused by the server")
		}
	})
	t.Run("a vote replayed by gfctl-admin is posted again by the voter", func(t *testing.T) {
		s.Gerrit.Wipe() // Gerrit lost the vote
		before := len(violations.lines("Violation"))
		if out, err := runGfctl(ctx, time.Minute, gfctl, asUser("gfctl-admin"), "replay", "ci.votes.posted", "--change", strconv.Itoa(voted), "--id", "least-privilege"); err != nil {
			t.Fatalf("gfctl replay as gfctl-admin: %v\n%s", err, out)
		}
		if err := s.WaitReviews(ctx, voted, 1, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if r := s.Gerrit.ReviewsFor(voted); len(r) != 1 || r[0].Input.Labels["Verified"] != 1 {
			t.Errorf("change %d after the replay: %+v; want one Verified +1", voted, r)
		}
		quiesce(t, s)
		if v := violations.lines("Violation")[before:]; len(v) > 0 {
			t.Errorf("the replay was refused somewhere:\n%s", strings.Join(v, "\n"))
		}
	})

	connect := func(t *testing.T, user string) *natsauth.Client {
		t.Helper()
		c, err := natsauth.Connect(natsauth.UserURL(s.NATS.ClientURL(), user, pw[user]), user)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	for _, tc := range []struct {
		user, what, want string
		op               func(ctx context.Context, c *natsauth.Client) error
	}{
		{"parser", "publish ci.builds.triggered", natsauth.Publish("ci.builds.triggered"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.JS.Publish(ctx, "ci.builds.triggered", []byte(`{}`))
				return err
			}},
		{"voter", "create a stream", natsauth.Publish("$JS.API.STREAM.CREATE.ROGUE"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
				return err
			}},
		{"trigger", "read the votes bucket", natsauth.Publish("$JS.API.STREAM.INFO.KV_votes"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.JS.KeyValue(ctx, streams.BucketVotes)
				return err
			}},
		{"trigger", "get a vote directly", natsauth.Publish("$JS.API.DIRECT.GET.KV_votes.$KV.votes.any"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.NC.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_votes.$KV.votes.any", nil)
				return err
			}},
		{"bridge", "bind the trigger's consumer", natsauth.Publish("$JS.API.CONSUMER.INFO.GERRIT_EVENTS.trigger"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.JS.Consumer(ctx, streams.GerritEvents, "trigger")
				return err
			}},
		{"bridge", "pull from the trigger's consumer", natsauth.Publish("$JS.API.CONSUMER.MSG.NEXT.GERRIT_EVENTS.trigger"),
			func(ctx context.Context, c *natsauth.Client) error {
				_, err := c.NC.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.GERRIT_EVENTS.trigger", []byte(`{"batch":1}`))
				return err
			}},
	} {
		t.Run(tc.user+" may not "+tc.what, func(t *testing.T) {
			c := connect(t, tc.user)
			opErr, v := c.Denied(tc.want, func(ctx context.Context) error { return tc.op(ctx, c) })
			if v == "" {
				t.Fatalf("%s: no %q (op error %v)", tc.user, tc.want, opErr)
			}
			if opErr == nil {
				t.Errorf("%s: the refused call reported success", tc.user)
			}
			t.Logf("%s: %v", tc.user, v)
		})
	}
	if _, err := s.JS.Stream(ctx, "ROGUE"); err == nil {
		t.Error("stream ROGUE exists: the voter's refused create went through")
	}
}

// serverLog is a nats-server logger that keeps the error and warning lines.
type serverLog struct {
	mu  sync.Mutex
	all []string
}

func (l *serverLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, fmt.Sprintf(format, v...))
}

func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Tracef(string, ...any)          {}
func (l *serverLog) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *serverLog) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add(format, v...) }
func (l *serverLog) lines(substr string) (out []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		if strings.Contains(s, substr) {
			out = append(out, s)
		}
	}
	return out
}

// runGfctl runs the gfctl binary against natsURL (credentials in it).
// It gives up after timeout: a refused request gets no answer.
func runGfctl(ctx context.Context, timeout time.Duration, bin, natsURL string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--nats", natsURL, "--json")...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if d := time.Since(start); d > 10*time.Second {
		err = errors.Join(err, fmt.Errorf("took %v", d.Round(time.Second)))
	}
	return string(out), err
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// quiesce waits until every durable consumer of streams/ has nothing
// pending or unacked.
func quiesce(t *testing.T, s *stack.Stack) {
	t.Helper()
	set, err := streams.Load()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		busy := ""
		for _, c := range set.Consumers {
			cons, err := s.JS.Consumer(context.Background(), c.Stream, c.Config.Durable)
			if err != nil {
				busy = c.Config.Durable + ": " + err.Error()
				break
			}
			info, err := cons.Info(context.Background())
			if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
				busy = c.Config.Durable
				break
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s still busy after 2m", busy)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// countMsgs counts the messages stored on subjects matching filter, in any stream.
func countMsgs(t *testing.T, js jetstream.JetStream, filter string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for name := range js.StreamNames(ctx, jetstream.WithStreamListSubject(filter)).Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range info.State.Subjects {
			n += int(c)
		}
	}
	return n
}
