package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/streams"
)

// need is what one service does on NATS. It mirrors the services' own
// declarations (streams.Need in services/<name>/internal, which another module
// cannot import) and the subjects they publish; the end-to-end test
// (cmd/gfdev TestNATSAuthLeastPrivilege) proves the real services need no more.
type need struct {
	streams   []string // bound at start (streams.Check)
	consumers []string // "<STREAM>.<durable>" it pulls from
	in        []string // for each consumer, a subject it delivers
	publishes []string // subjects it publishes to
	rw, ro    []string // KV buckets it writes, and only reads
	watch     []string // KV buckets it watches or lists (an ordered push consumer)
}

var needs = map[string]need{
	"bridge": {
		streams:   []string{streams.GerritRaw, streams.DLQ},
		publishes: []string{"gerrit.raw", "gerritflow.dlq.bridge"},
		rw:        []string{streams.BucketLeases, streams.BucketCheckpoints},
		watch:     []string{streams.BucketLeases, streams.BucketCheckpoints},
	},
	"parser": {
		streams:   []string{streams.GerritRaw, streams.GerritEvents, streams.DLQ},
		consumers: []string{"GERRIT_RAW.parser"}, in: []string{"gerrit.raw"},
		publishes: []string{"gerrit.events.patchset-created", "gerrit.events.comment-added", "gerritflow.dlq.parser"},
	},
	"trigger": {
		streams:   []string{streams.GerritEvents, streams.CIBuilds, streams.DLQ},
		consumers: []string{"GERRIT_EVENTS.trigger"}, in: []string{"gerrit.events.patchset-created"},
		publishes: []string{"ci.builds.triggered", "ci.builds.cancel", "gerritflow.dlq.trigger"},
		rw:        []string{streams.BucketChanges, streams.BucketBuildSets, streams.BucketBuilds},
	},
	"monitor": {
		streams:   []string{streams.CIBuilds, streams.DLQ},
		consumers: []string{"CI_BUILDS.monitor"}, in: []string{"ci.builds.triggered"},
		publishes: []string{"ci.builds.completed", "gerritflow.dlq.monitor"},
		rw:        []string{streams.BucketBuilds},
	},
	"voter": {
		streams:   []string{streams.CIBuilds, streams.CIVotes, streams.DLQ},
		consumers: []string{"CI_BUILDS.voter", "CI_VOTES.voter-replay"}, in: []string{"ci.builds.completed", "ci.votes.replay"},
		publishes: []string{"ci.votes.posted", "gerritflow.dlq.voter"},
		rw:        []string{streams.BucketVotes},
		ro:        []string{streams.BucketBuildSets, streams.BucketBuilds},
	},
}

// TestNATSConfigFiles parses the server configurations the way nats-server
// does and checks what the deployment relies on.
func TestNATSConfigFiles(t *testing.T) {
	for _, tc := range []struct {
		file    string
		cluster bool
	}{{"nats-server.conf", false}, {"nats-cluster.conf", true}} {
		t.Run(tc.file, func(t *testing.T) {
			testPasswords(t)
			t.Setenv("NATS_SERVER_NAME", "nats-1")
			o, err := natsauth.Load(path(t, "deploy", "nats", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !o.JetStream || o.StoreDir != "/data" {
				t.Errorf("jetstream = %v, store_dir %q; want enabled on /data", o.JetStream, o.StoreDir)
			}
			if o.Port != 4222 || o.HTTPPort != 8222 {
				t.Errorf("ports = client %d, monitoring %d; want 4222 and 8222 (KEDA reads /jsz there)", o.Port, o.HTTPPort)
			}
			if o.ServerName == "" {
				t.Error("server_name is empty: JetStream needs a stable one")
			}
			if o.LameDuckDuration <= o.LameDuckGracePeriod || o.LameDuckDuration > 40*time.Second {
				t.Errorf("lame duck %v (grace %v): must exceed the grace and fit the 45s stop_grace_period", o.LameDuckDuration, o.LameDuckGracePeriod)
			}
			var users []string
			for _, u := range o.Users {
				users = append(users, u.Username)
				if u.Account == nil || u.Account.Name != natsauth.Account {
					t.Errorf("user %s is not in account %s", u.Username, natsauth.Account)
				}
				if u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) == 0 ||
					u.Permissions.Subscribe == nil || len(u.Permissions.Subscribe.Allow) == 0 {
					t.Errorf("user %s has no publish/subscribe allow list: everything would be allowed", u.Username)
				}
			}
			slices.Sort(users)
			want := slices.Sorted(slices.Values(natsauth.Users))
			if !slices.Equal(users, want) {
				t.Errorf("users = %v; want %v", users, want)
			}
			if tc.cluster {
				if o.Cluster.Name != "gerritflow" || o.Cluster.Port != 6222 || len(o.Routes) != 3 {
					t.Errorf("cluster %q port %d with %d routes; want gerritflow on 6222 with a route to each of 3 nodes",
						o.Cluster.Name, o.Cluster.Port, len(o.Routes))
				}
			} else if o.Cluster.Port != 0 {
				t.Errorf("the single server has a cluster port %d", o.Cluster.Port)
			}
		})
	}
	t.Run("a missing password stops the server", func(t *testing.T) {
		testPasswords(t)
		os.Unsetenv("VOTER_NATS_PASSWORD") // t.Setenv above restores it
		_, err := server.ProcessConfigFile(path(t, "deploy", "nats", "nats-server.conf"))
		if err == nil || !strings.Contains(err.Error(), "VOTER_NATS_PASSWORD") {
			t.Fatalf("config without VOTER_NATS_PASSWORD: err = %v; want one naming the variable", err)
		}
	})
}

var (
	apiStream   = regexp.MustCompile(`^\$JS\.API\.(?:STREAM\.INFO|STREAM\.MSG\.GET|DIRECT\.GET)\.([A-Za-z0-9_-]+)(?:\.>)?$`)
	apiConsumer = regexp.MustCompile(`^\$JS\.API\.CONSUMER\.(?:INFO|MSG\.NEXT)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$`)
	ackSubject  = regexp.MustCompile(`^\$JS\.ACK\.(?:\*\.\*\.)?([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.>$`)
	kvSubject   = regexp.MustCompile(`^\$KV\.([A-Za-z0-9_-]+)\.>$`)
)

// TestNATSPermissionsNameWhatExists checks that every stream, consumer and
// bucket the permission tables name exists in streams/, and that each
// service is granted what it binds to (a renamed stream must not silently
// lock a service out, nor leave a stale grant behind).
func TestNATSPermissionsNameWhatExists(t *testing.T) {
	testPasswords(t)
	o, err := natsauth.Load(path(t, "deploy", "nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	set := loadStreams(t)
	stream := map[string]bool{}
	for _, s := range set.Streams {
		stream[s.Name] = true
	}
	for _, b := range set.Buckets {
		stream["KV_"+b.Bucket] = true
	}
	consumer := map[string]bool{}
	for _, c := range set.Consumers {
		consumer[c.Stream+"."+c.Config.Durable] = true
	}
	allow := map[string][]string{}
	for _, u := range o.Users {
		allow[u.Username] = u.Permissions.Publish.Allow
		for _, s := range u.Permissions.Publish.Allow {
			if m := apiStream.FindStringSubmatch(s); m != nil && !stream[m[1]] && m[1] != "*" {
				t.Errorf("%s may use stream %s, which streams/ does not define (%s)", u.Username, m[1], s)
			}
			if m := apiConsumer.FindStringSubmatch(s); m != nil && m[1] != "*" && !strings.HasPrefix(m[1], "KV_") &&
				m[1] != streams.DLQ && !consumer[m[1]+"."+m[2]] {
				t.Errorf("%s may use consumer %s.%s, which streams/consumers does not define (%s)", u.Username, m[1], m[2], s)
			}
			if m := ackSubject.FindStringSubmatch(s); m != nil && !consumer[m[1]+"."+m[2]] {
				t.Errorf("%s may ack for %s.%s, which streams/consumers does not define (%s)", u.Username, m[1], m[2], s)
			}
			if m := kvSubject.FindStringSubmatch(s); m != nil && !stream["KV_"+m[1]] {
				t.Errorf("%s may write bucket %s, which streams/kv does not define", u.Username, m[1])
			}
		}
	}
	for svc, n := range needs {
		grants := allow[svc]
		has := func(s string) bool { return slices.Contains(grants, s) }
		for _, s := range n.streams {
			if !has("$JS.API.STREAM.INFO." + s) {
				t.Errorf("%s binds to stream %s but may not read its info", svc, s)
			}
		}
		for _, cons := range n.consumers {
			for _, s := range []string{"$JS.API.CONSUMER.INFO." + cons, "$JS.API.CONSUMER.MSG.NEXT." + cons,
				"$JS.ACK." + cons + ".>", "$JS.ACK.*.*." + cons + ".>"} {
				if !has(s) {
					t.Errorf("%s consumes %s but lacks %s", svc, cons, s)
				}
			}
		}
		for _, b := range append(append([]string{}, n.rw...), n.ro...) {
			for _, s := range []string{"$JS.API.STREAM.INFO.KV_" + b, "$JS.API.DIRECT.GET.KV_" + b + ".>", "$JS.API.STREAM.MSG.GET.KV_" + b} {
				if !has(s) {
					t.Errorf("%s reads bucket %s but lacks %s", svc, b, s)
				}
			}
		}
		for _, b := range n.rw {
			if !has("$KV." + b + ".>") {
				t.Errorf("%s writes bucket %s but lacks $KV.%s.>", svc, b, b)
			}
		}
		for _, b := range n.ro {
			if has("$KV." + b + ".>") {
				t.Errorf("%s only reads bucket %s but may write it", svc, b)
			}
		}
		for _, b := range n.watch {
			for _, s := range []string{"$JS.API.CONSUMER.CREATE.KV_" + b + ".>", "$JS.API.CONSUMER.DELETE.KV_" + b + ".>", "$JS.FC.KV_" + b + ".>"} {
				if !has(s) {
					t.Errorf("%s watches bucket %s but lacks %s", svc, b, s)
				}
			}
		}
		for _, g := range grants {
			// Creating a consumer is a way to make the server publish (its
			// deliver subject is not checked): only on the buckets it watches.
			if rest, ok := strings.CutPrefix(g, "$JS.API.CONSUMER.CREATE."); ok {
				if b, _, _ := strings.Cut(strings.TrimPrefix(rest, "KV_"), "."); !strings.HasPrefix(rest, "KV_") || !slices.Contains(n.watch, b) {
					t.Errorf("%s may create consumers (%s) on a stream it does not watch", svc, g)
				}
			}
			if strings.Contains(g, "STREAM.CREATE") || strings.Contains(g, "STREAM.UPDATE") || strings.Contains(g, "STREAM.DELETE") ||
				strings.Contains(g, "STREAM.PURGE") || g == ">" || g == "$JS.API.>" || strings.HasPrefix(g, "ci.>") || strings.HasPrefix(g, "gerrit.>") {
				t.Errorf("%s has the broad or administrative grant %q", svc, g)
			}
		}
	}
}

// TestNATSLeastPrivilege runs a real nats-server with deploy/nats's users
// and checks, user by user, that each can do what its service does, and is
// refused what it must not do.
func TestNATSLeastPrivilege(t *testing.T) {
	pw := testPasswords(t)
	fileOpts, err := natsauth.Load(path(t, "deploy", "nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(natsauth.ForTest(fileOpts, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	connect := func(t *testing.T, user string) *natsauth.Client {
		t.Helper()
		c, err := natsauth.Connect(natsauth.UserURL(ns.ClientURL(), user, pw[user]), user)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	if _, err := natsauth.Connect(natsauth.UserURL(ns.ClientURL(), "parser", "wrong"), "parser"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	admin := connect(t, "gfctl-admin")
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if err := streams.Provision(ctx(t), admin.JS); err != nil {
		t.Fatalf("gfctl-admin cannot provision: %v", err)
	}

	for _, svc := range Services {
		n := needs[svc]
		t.Run(svc+" does its work", func(t *testing.T) {
			c := connect(t, svc)
			for _, s := range n.streams {
				if _, err := c.JS.Stream(ctx(t), s); err != nil {
					t.Errorf("bind stream %s: %v", s, err)
				}
			}
			for i, cons := range n.consumers {
				stream, durable, _ := strings.Cut(cons, ".")
				if _, err := admin.JS.Publish(ctx(t), n.in[i], []byte("{}")); err != nil {
					t.Fatal(err)
				}
				consumer, err := c.JS.Consumer(ctx(t), stream, durable)
				if err != nil {
					t.Fatalf("bind consumer %s: %v", cons, err)
				}
				batch, err := consumer.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
				if err != nil {
					t.Fatalf("pull from %s: %v", cons, err)
				}
				got := 0
				for m := range batch.Messages() {
					got++
					if err := m.InProgress(); err != nil {
						t.Errorf("in progress: %v", err)
					}
					if err := m.DoubleAck(ctx(t)); err != nil {
						t.Errorf("ack a message of %s: %v", cons, err)
					}
				}
				if got != 1 || batch.Error() != nil {
					t.Errorf("pulled %d messages from %s (err %v); want 1", got, cons, batch.Error())
				}
			}
			for i, subj := range n.publishes {
				if _, err := c.JS.Publish(ctx(t), subj, []byte("{}"), jetstream.WithMsgID(fmt.Sprintf("%s-%d", svc, i))); err != nil {
					t.Errorf("publish %s: %v", subj, err)
				}
			}
			for _, b := range n.rw {
				kv, err := c.JS.KeyValue(ctx(t), b)
				if err != nil {
					t.Fatalf("open bucket %s: %v", b, err)
				}
				key := "natsauth." + svc
				rev, err := kv.Create(ctx(t), key, []byte("1"))
				if err != nil {
					t.Fatalf("create in %s: %v", b, err)
				}
				if _, err := kv.Create(ctx(t), key, []byte("2")); !errors.Is(err, jetstream.ErrKeyExists) {
					t.Errorf("second create in %s = %v; want ErrKeyExists", b, err)
				}
				if rev, err = kv.Update(ctx(t), key, []byte("3"), rev); err != nil {
					t.Errorf("update in %s: %v", b, err)
				}
				if e, err := kv.Get(ctx(t), key); err != nil || string(e.Value()) != "3" {
					t.Errorf("get from %s = %v, %v; want 3", b, e, err)
				}
				if err := kv.Delete(ctx(t), key, jetstream.LastRevision(rev)); err != nil {
					t.Errorf("delete in %s: %v", b, err)
				}
			}
			for _, b := range n.ro {
				kv, err := c.JS.KeyValue(ctx(t), b)
				if err != nil {
					t.Fatalf("open bucket %s: %v", b, err)
				}
				if _, err := kv.Get(ctx(t), "natsauth.missing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
					t.Errorf("get a missing key of %s = %v; want ErrKeyNotFound", b, err)
				}
			}
			for _, b := range n.watch {
				kv, err := c.JS.KeyValue(ctx(t), b)
				if err != nil {
					t.Fatalf("open bucket %s: %v", b, err)
				}
				w, err := kv.WatchAll(ctx(t), jetstream.IgnoreDeletes())
				if err != nil {
					t.Fatalf("watch %s: %v", b, err)
				}
				for e := range w.Updates() {
					if e == nil {
						break
					}
				}
				if err := w.Stop(); err != nil {
					t.Errorf("stop watching %s: %v", b, err)
				}
			}
			time.Sleep(200 * time.Millisecond) // let asynchronous violations arrive
			if v := c.Violations(); len(v) > 0 {
				t.Errorf("%s was refused something it needs: %v", svc, v)
			}
		})
	}

	t.Run("status-reader reads state", func(t *testing.T) {
		c := connect(t, "status-reader")
		for name := range c.JS.StreamNames(ctx(t)).Name() {
			if _, err := c.JS.Stream(ctx(t), name); err != nil {
				t.Errorf("stream info %s: %v", name, err)
			}
		}
		if _, err := c.JS.Consumer(ctx(t), streams.GerritRaw, "parser"); err != nil {
			t.Errorf("consumer info: %v", err)
		}
		for _, b := range []string{streams.BucketChanges, streams.BucketBuildSets, streams.BucketBuilds, streams.BucketVotes} {
			kv, err := c.JS.KeyValue(ctx(t), b)
			if err != nil {
				t.Fatalf("open bucket %s: %v", b, err)
			}
			if _, err := kv.ListKeys(ctx(t)); err != nil {
				t.Errorf("list keys of %s: %v", b, err)
			}
			if _, err := kv.Get(ctx(t), "natsauth.missing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("get from %s = %v; want ErrKeyNotFound", b, err)
			}
		}
		dlq, err := c.JS.OrderedConsumer(ctx(t), streams.DLQ, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatalf("list the DLQ: %v", err)
		}
		if _, err := dlq.Fetch(10, jetstream.FetchMaxWait(time.Second)); err != nil {
			t.Errorf("read the DLQ: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		if v := c.Violations(); len(v) > 0 {
			t.Errorf("status-reader was refused a read: %v", v)
		}
	})

	type op = func(ctx context.Context, c *natsauth.Client) error
	publish := func(subj string) op {
		return func(ctx context.Context, c *natsauth.Client) error {
			_, err := c.JS.Publish(ctx, subj, []byte("{}"))
			return err
		}
	}
	request := func(subj, body string) op {
		return func(ctx context.Context, c *natsauth.Client) error {
			_, err := c.NC.RequestWithContext(ctx, subj, []byte(body))
			return err
		}
	}
	subscribe := func(subj string) op {
		return func(ctx context.Context, c *natsauth.Client) error {
			if _, err := c.NC.SubscribeSync(subj); err != nil {
				return err
			}
			return c.NC.FlushWithContext(ctx)
		}
	}
	createStream := func(ctx context.Context, c *natsauth.Client) error {
		_, err := c.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
		return err
	}
	// A service connecting with nats.go's default inbox prefix (_INBOX), not
	// its own, gets no JetStream reply at all: the server refuses the
	// subscription its request needs.
	t.Run("the default inbox is refused", func(t *testing.T) {
		c, err := natsauth.ConnectInbox(natsauth.UserURL(ns.ClientURL(), "parser", pw["parser"]), "parser", "_INBOX")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// nats.go's reply subscription: _INBOX.<random>.*
		opErr, v := c.Denied(`Permissions Violation for Subscription to "_INBOX.`, func(ctx context.Context) error {
			_, err := c.JS.Stream(ctx, streams.GerritRaw)
			return err
		})
		if v == "" || opErr == nil {
			t.Errorf("stream info with the default inbox = %v, violation %q; want it refused", opErr, v)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			user, what, want string
			op               op
		}{
			{"parser", "publish a build trigger", natsauth.Publish("ci.builds.triggered"), publish("ci.builds.triggered")},
			{"parser", "create a stream", natsauth.Publish("$JS.API.STREAM.CREATE.ROGUE"), createStream},
			{"parser", "delete its own consumer", natsauth.Publish("$JS.API.CONSUMER.DELETE.GERRIT_RAW.parser"),
				func(ctx context.Context, c *natsauth.Client) error {
					return c.JS.DeleteConsumer(ctx, streams.GerritRaw, "parser")
				}},
			{"parser", "read a KV bucket", natsauth.Publish("$JS.API.STREAM.INFO.KV_changes"),
				func(ctx context.Context, c *natsauth.Client) error {
					_, err := c.JS.KeyValue(ctx, streams.BucketChanges)
					return err
				}},
			{"voter", "create a stream", natsauth.Publish("$JS.API.STREAM.CREATE.ROGUE"), createStream},
			{"voter", "purge the votes stream", natsauth.Publish("$JS.API.STREAM.PURGE.CI_VOTES"), request("$JS.API.STREAM.PURGE.CI_VOTES", "{}")},
			{"voter", "write a build record", natsauth.Publish("$KV.builds.x"), publish("$KV.builds.x")},
			{"voter", "publish a build trigger", natsauth.Publish("ci.builds.triggered"), publish("ci.builds.triggered")},
			{"trigger", "read the votes bucket", natsauth.Publish("$JS.API.STREAM.INFO.KV_votes"),
				func(ctx context.Context, c *natsauth.Client) error {
					_, err := c.JS.KeyValue(ctx, streams.BucketVotes)
					return err
				}},
			{"trigger", "get a vote directly", natsauth.Publish("$JS.API.DIRECT.GET.KV_votes.$KV.votes.x"), request("$JS.API.DIRECT.GET.KV_votes.$KV.votes.x", "")},
			{"trigger", "publish a completed build", natsauth.Publish("ci.builds.completed"), publish("ci.builds.completed")},
			{"bridge", "bind the trigger's consumer", natsauth.Publish("$JS.API.CONSUMER.INFO.GERRIT_EVENTS.trigger"),
				func(ctx context.Context, c *natsauth.Client) error {
					_, err := c.JS.Consumer(ctx, streams.GerritEvents, "trigger")
					return err
				}},
			{"bridge", "pull from the trigger's consumer", natsauth.Publish("$JS.API.CONSUMER.MSG.NEXT.GERRIT_EVENTS.trigger"),
				request("$JS.API.CONSUMER.MSG.NEXT.GERRIT_EVENTS.trigger", `{"batch":1}`)},
			{"bridge", "publish a normalized event", natsauth.Publish("gerrit.events.patchset-created"), publish("gerrit.events.patchset-created")},
			{"bridge", "subscribe to the events", natsauth.Subscribe("gerrit.events.>"),
				func(ctx context.Context, c *natsauth.Client) error {
					if _, err := c.NC.SubscribeSync("gerrit.events.>"); err != nil {
						return err
					}
					return c.NC.FlushWithContext(ctx)
				}},
			{"monitor", "post a vote", natsauth.Publish("ci.votes.posted"), publish("ci.votes.posted")},
			{"monitor", "ack for the voter", natsauth.Publish("$JS.ACK.CI_BUILDS.voter.1.1.1.1.0"), publish("$JS.ACK.CI_BUILDS.voter.1.1.1.1.0")},
			{"status-reader", "publish a raw event", natsauth.Publish("gerrit.raw"), publish("gerrit.raw")},
			{"status-reader", "write a vote", natsauth.Publish("$KV.votes.x"), publish("$KV.votes.x")},
			{"status-reader", "delete a durable consumer", natsauth.Publish("$JS.API.CONSUMER.DELETE.GERRIT_RAW.parser"),
				request("$JS.API.CONSUMER.DELETE.GERRIT_RAW.parser", "")},
			{"parser", "read the voter's replies", natsauth.Subscribe("_INBOX_voter.>"), subscribe("_INBOX_voter.>")},
			{"voter", "read every reply", natsauth.Subscribe("_INBOX.>"), subscribe("_INBOX.>")},
			{"status-reader", "read the trigger's replies", natsauth.Subscribe("_INBOX_trigger.*"), subscribe("_INBOX_trigger.*")},
		} {
			t.Run(tc.user+" may not "+tc.what, func(t *testing.T) {
				t.Parallel()
				c := connect(t, tc.user)
				if _, v := c.Denied(tc.want, func(ctx context.Context) error { return tc.op(ctx, c) }); v == "" {
					t.Errorf("no %q reported to %s (violations: %v)", tc.want, tc.user, c.Violations())
				}
			})
		}
	})

	// The server still holds what the refused calls aimed at.
	if _, err := admin.JS.Consumer(ctx(t), streams.GerritRaw, "parser"); err != nil {
		t.Errorf("consumer parser after the refusals: %v", err)
	}
	if _, err := admin.JS.Stream(ctx(t), "ROGUE"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream ROGUE exists after refused creates (err %v)", err)
	}
}
