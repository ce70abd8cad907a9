package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// violationLog keeps the permission violations a nats-server logs.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *violationLog) record(format string, v ...any) {
	if s := fmt.Sprintf(format, v...); strings.Contains(s, "Violation") {
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
	}
}
func (l *violationLog) Noticef(format string, v ...any) { l.record(format, v...) }
func (l *violationLog) Warnf(format string, v ...any)   { l.record(format, v...) }
func (l *violationLog) Fatalf(format string, v ...any)  { l.record(format, v...) }
func (l *violationLog) Errorf(format string, v ...any)  { l.record(format, v...) }
func (l *violationLog) Debugf(format string, v ...any)  { l.record(format, v...) }
func (l *violationLog) Tracef(format string, v ...any)  { l.record(format, v...) }

func (l *violationLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// inboxServer runs a JetStream server whose users may subscribe to their own
// inbox prefix only (_INBOX_<user>.>), as deploy/nats/permissions.conf has it.
func inboxServer(t *testing.T, users ...string) (*server.Server, *violationLog) {
	t.Helper()
	opts := &server.Options{}
	for _, u := range users {
		opts.Users = append(opts.Users, &server.User{Username: u, Password: u + "-pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"orders.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_" + u + ".>"}},
		}})
	}
	return startServer(t, opts)
}

// TestConnectUsesTheUsersInbox shows that a user allowed to subscribe only
// to _INBOX_<user>.> can do all its JetStream work through bus.Connect
// (PubAcks, API requests, KV create/get/watch, pull consume and fetch with
// acks), whether the user comes from nats.user or from nats.url, and that the
// same user with nats.go's default _INBOX prefix is refused its replies.
func TestConnectUsesTheUsersInbox(t *testing.T) {
	ns, log := inboxServer(t, "svc", "other")
	t.Setenv("GF_TEST_NATS_PASSWORD", "svc-pw")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, c := range []config.NATS{
		{URL: ns.ClientURL(), User: "svc", PasswordEnv: "GF_TEST_NATS_PASSWORD"},
		{URL: strings.Replace(ns.ClientURL(), "nats://", "nats://svc:svc-pw@", 1)},
	} {
		name := "nats.user"
		if c.User == "" {
			name = "user in nats.url"
		}
		t.Run(name, func(t *testing.T) {
			js, err := bus.Connect(ctx, c, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer js.Conn().Close()
			if got := js.Conn().Opts.InboxPrefix; got != "_INBOX_svc" {
				t.Fatalf("inbox prefix %q; want _INBOX_svc", got)
			}
			useJetStream(ctx, t, js, name)
			time.Sleep(100 * time.Millisecond) // let asynchronous violations arrive
			if v := log.all(); len(v) > 0 {
				t.Errorf("permission violations:\n%s", strings.Join(v, "\n"))
			}
		})
	}

	t.Run("default inbox is refused", func(t *testing.T) {
		violations := make(chan string, 16)
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("svc", "svc-pw"),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					violations <- err.Error()
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.SubscribeSync("_INBOX.>"); err != nil {
			t.Fatal(err)
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-violations:
			if !strings.Contains(v, `Permissions Violation for Subscription to "_INBOX.>"`) {
				t.Errorf("violation %q; want one for _INBOX.>", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscribing to _INBOX.> was not refused")
		}
		// A JetStream request's reply inbox (_INBOX.<nuid>.*) is refused too:
		// the request gets no answer.
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		defer rcancel()
		if _, err := js.AccountInfo(rctx); err == nil {
			t.Error("a JetStream request with the default inbox got its reply")
		}
		select {
		case v := <-violations:
			if !strings.Contains(v, `Subscription to "_INBOX.`) {
				t.Errorf("violation %q; want one for the _INBOX reply subscription", v)
			}
		case <-time.After(5 * time.Second):
			t.Error("the reply subscription on _INBOX was not refused")
		}
	})

	t.Run("another user's inbox is refused", func(t *testing.T) {
		violations := make(chan string, 16)
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("svc", "svc-pw"), nats.CustomInboxPrefix("_INBOX_svc"),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					violations <- err.Error()
				}
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := nc.SubscribeSync("_INBOX_other.>"); err != nil {
			t.Fatal(err)
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case v := <-violations:
			if !strings.Contains(v, `Subscription to "_INBOX_other.>"`) {
				t.Errorf("violation %q; want one for _INBOX_other.>", v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscribing to another user's inbox was not refused")
		}
	})
}

// TestConnectRefusesAnUnusableInbox: a user name that cannot be a subject
// token needs nats.inbox_prefix, and Connect says so before dialing.
func TestConnectRefusesAnUnusableInbox(t *testing.T) {
	t.Setenv("GF_TEST_NATS_USER", "ci.bot")
	t.Setenv("GF_TEST_NATS_PASSWORD", "pw")
	_, err := bus.Connect(context.Background(), config.NATS{URL: "nats://127.0.0.1:1", UserEnv: "GF_TEST_NATS_USER", PasswordEnv: "GF_TEST_NATS_PASSWORD"}, "test")
	if err == nil || !strings.Contains(err.Error(), `nats.inbox_prefix: user "ci.bot" cannot be an inbox token`) {
		t.Errorf("Connect = %v; want an error naming nats.inbox_prefix", err)
	}
}

// useJetStream does, through js, all the JetStream work a service does:
// create a stream, publish with synchronous and asynchronous PubAcks, create,
// get and watch a KV key, consume and fetch from a durable pull consumer with
// acknowledged acks. Every reply comes to js's inbox prefix. name makes the
// stream and bucket names unique per call.
func useJetStream(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	stream := strings.NewReplacer(".", "_", " ", "_").Replace(strings.ToUpper(name))
	subject := "orders." + strings.ToLower(stream)
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	// PubAcks: synchronous and asynchronous.
	if ack, err := js.Publish(ctx, subject, []byte("1"), jetstream.WithMsgID("m1")); err != nil || ack.Sequence != 1 {
		t.Fatalf("publish = %+v, %v", ack, err)
	}
	f, err := js.PublishAsync(subject, []byte("2"), jetstream.WithMsgID("m2"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ack := <-f.Ok():
		if ack.Sequence != 2 {
			t.Errorf("async PubAck %+v; want sequence 2", ack)
		}
	case err := <-f.Err():
		t.Fatalf("async publish: %v", err)
	case <-ctx.Done():
		t.Fatal("no async PubAck")
	}

	// KV: create, get, watch (an ordered push consumer delivering to the inbox).
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b_" + strings.ToLower(stream)})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("v1")); err != nil {
		t.Fatalf("kv create: %v", err)
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v1" {
		t.Fatalf("kv get = %v, %v", e, err)
	}
	w, err := kv.Watch(ctx, "k")
	if err != nil {
		t.Fatalf("kv watch: %v", err)
	}
	if e := <-w.Updates(); e == nil || string(e.Value()) != "v1" {
		t.Errorf("watch delivered %v; want v1", e)
	}
	if _, err := kv.Put(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	for e := range w.Updates() {
		if e != nil && string(e.Value()) == "v2" {
			break
		}
	}
	if err := w.Stop(); err != nil {
		t.Error(err)
	}

	// Pull: Fetch, then Consume, on a durable, acked with a reply
	// (DoubleAck). Fetch first: a stopped Consume leaves its pull request on
	// the server, which would take a message published after it.
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
	}
	if n != 1 || batch.Error() != nil {
		t.Errorf("fetched %d messages (err %v); want 1", n, batch.Error())
	}
	if _, err := js.Publish(ctx, subject, []byte("3")); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 2)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
		got <- string(m.Data())
	}, jetstream.PullMaxMessages(1))
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatalf("consumed %d of 2 messages", i)
		}
	}
	cc.Stop()
}
