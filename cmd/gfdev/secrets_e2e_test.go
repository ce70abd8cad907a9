package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/streams"
)

// TestSecretsNeverPrinted runs the pipeline with known secrets: the
// simulators' Jenkins token and Gerrit password (JENKINS_TOKEN,
// GERRIT_HTTP_PASSWORD), random AWS keys (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY: the emulator takes any) and a random NATS password
// (NATS_PASSWORD, nats.password_env; the server has that one user), every
// service exporting its spans to a receiver in this test. It takes a passing
// change, a failing change and a poison record through it while Jenkins
// answers 503 and Gerrit 500 for a while (errors logged, recorded on spans,
// retried), starts a service that cannot log in to NATS, and then looks for
// every secret in every log and generated config, every dead letter, every
// message of every stream (KV buckets included), headers and bodies, every
// span export request and the failed service's output.
func TestSecretsNeverPrinted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const natsUser = "gerritflow"
	natsPassword := "nats-password-" + randomHex(t)
	awsKeyID := "AKIA" + strings.ToUpper(randomHex(t)[:16])
	awsSecret := "aws-secret-" + randomHex(t)
	secrets := map[string]string{
		"the Jenkins token":     stack.JenkinsToken,
		"the Gerrit password":   stack.GerritPassword,
		"the AWS access key id": awsKeyID,
		"the AWS secret key":    awsSecret,
		"the NATS password":     natsPassword,
	}
	find := func(t *testing.T, where string, data []byte) {
		t.Helper()
		for what, secret := range secrets {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s holds %s", where, what)
			}
		}
	}

	rcv := startOTLPReceiver(t)
	dir := filepath.Join(t.TempDir(), "dev")
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	// Every process logs in as natsUser, its password in NATS_PASSWORD only.
	login := func(_, url string) string {
		return fmt.Sprintf("{ url: %q, user: %s, password_env: NATS_PASSWORD }", url, natsUser)
	}
	s, err := stack.Start(ctx, stack.Options{
		Dir: dir, Log: log,
		Env: []string{"AWS_ACCESS_KEY_ID=" + awsKeyID, "AWS_SECRET_ACCESS_KEY=" + awsSecret, "NATS_PASSWORD=" + natsPassword},
		NATSOptions: func(so *server.Options) {
			so.Users = []*server.User{{Username: natsUser, Password: natsPassword}}
		},
		AdminURL:    func(url string) string { return natsauth.UserURL(url, natsUser, natsPassword) },
		ServiceNATS: login,
		ViewerNATS:  login,
		ExtraConfig: fmt.Sprintf("otel: { endpoint: %q, protocol: http, insecure: true }\n", rcv.url),
	})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	stop := stopper(t, s)
	s.ScriptJenkins(300 * time.Millisecond)

	t.Run("every process logs in with the NATS password", func(t *testing.T) {
		connz, err := s.NATS.Connz(&server.ConnzOptions{Username: true, Limit: 1024})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, c := range connz.Conns {
			if svc, ok := strings.CutPrefix(c.Name, "gerritflow-"); ok && c.AuthorizedUser == natsUser {
				seen[svc] = true
			}
		}
		for _, name := range stack.Processes() {
			if !seen[name] {
				t.Errorf("no connection of %s as %s", name, natsUser)
			}
		}
	})

	// Jenkins and Gerrit fail while the changes go through: Jenkins until
	// the trigger was refused, Gerrit until the voter was refused the votes.
	// Only the voter calls Gerrit's REST API here (no job has file patterns,
	// no build-started message), once per attempt at a vote.
	jenkinsBefore, gerritBefore := s.Jenkins.Requests(), s.Gerrit.Requests()
	s.Jenkins.FailWith(http.StatusServiceUnavailable, time.Hour)
	s.Gerrit.FailWith(http.StatusInternalServerError, time.Hour)
	var changes []int
	for _, subject := range []string{"Keep secrets", "[fail] Print secrets"} {
		c, _, _, err := s.Gerrit.Upload(gerritsim.Upload{Project: "platform/core", Branch: "main", Subject: subject, Uploader: stack.Developer})
		if err != nil {
			t.Fatal(err)
		}
		changes = append(changes, c)
	}
	// A record that is not a Gerrit event: the parser dead-letters it with the reason.
	if _, _, err := gerritsim.PutEvent(ctx, s.Kinesis.Client(), stack.KinesisStream, "patchset-created", []byte(`{"type":"patchset-created","change":`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the trigger's requests refused by Jenkins", func() bool { return s.Jenkins.Requests() >= jenkinsBefore+2 })
	s.Jenkins.FailWith(0, 0)
	// Once every build was started, Jenkins fails the monitor's polls for a moment.
	waitFor(t, 30*time.Second, "every build started", func() bool {
		return s.Jenkins.BuildRequests("folder/unit-tests")+s.Jenkins.BuildRequests("lint") >= 2*len(changes)
	})
	s.Jenkins.FailWith(http.StatusServiceUnavailable, time.Second)
	waitFor(t, time.Minute, "every build completed", func() bool { return countMsgs(t, s.JS, "ci.builds.completed") >= 2*len(changes) })
	// One refusal is enough: a vote retried after 1s costs less than after 5s.
	waitFor(t, 30*time.Second, "a vote refused by Gerrit", func() bool { return s.Gerrit.Requests() > gerritBefore })
	s.Gerrit.FailWith(0, 0)

	for _, c := range changes {
		if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "the poison record in the DLQ", func() bool { return countMsgs(t, s.JS, "gerritflow.dlq.>") > 0 })
	quiesce(t, s)

	t.Run("dead letters", func(t *testing.T) {
		msgs := readStream(t, s.JS, streams.DLQ)
		if len(msgs) == 0 {
			t.Fatal("no dead letter to check")
		}
		for _, m := range msgs {
			if m.Header.Get("Gerritflow-Error") == "" {
				t.Errorf("dead letter %s has no Gerritflow-Error", m.Subject)
			}
			find(t, "dead letter "+m.Subject+" "+m.Header.Get("Gerritflow-Error"), m.bytes())
		}
	})

	t.Run("every message of every stream", func(t *testing.T) {
		total := 0
		for name := range s.JS.StreamNames(ctx).Name() {
			msgs := readStream(t, s.JS, name)
			total += len(msgs)
			for _, m := range msgs {
				find(t, "stream "+name+" message "+m.Subject, m.bytes())
			}
		}
		if total < 20 {
			t.Errorf("only %d messages in all streams: the scan saw too little", total)
		}
	})

	// A service that cannot log in to NATS exits, saying why, without the
	// password it was given: in nats.url, or in NATS_PASSWORD.
	t.Run("a service that cannot log in", func(t *testing.T) {
		shared, err := os.ReadFile(s.Config)
		if err != nil {
			t.Fatal(err)
		}
		natsLine := fmt.Sprintf("nats:    { url: %q }", s.NATS.ClientURL())
		if !bytes.Contains(shared, []byte(natsLine)) {
			t.Fatalf("the generated config has no line %s", natsLine)
		}
		listen, err := net.Listen("tcp", "127.0.0.1:0") // an address where nothing listens
		if err != nil {
			t.Fatal(err)
		}
		deadAddr := listen.Addr().String()
		listen.Close()
		wrongPassword := "wrong-nats-password-" + randomHex(t)
		secrets["a wrong NATS password"] = wrongPassword
		for _, tc := range []struct {
			name, nats, env string
			want            []string
		}{
			{"its password in nats.url, nothing listening",
				fmt.Sprintf("{ url: %q }", "nats://"+natsUser+":"+natsPassword+"@"+deadAddr), "NATS_PASSWORD=" + natsPassword,
				[]string{"connect nats", deadAddr}},
			{"a wrong password in nats.url",
				fmt.Sprintf("{ url: %q }", natsauth.UserURL(s.NATS.ClientURL(), natsUser, wrongPassword)), "NATS_PASSWORD=" + natsPassword,
				[]string{"connect nats", "Authorization Violation"}},
			{"a wrong password in NATS_PASSWORD",
				login("", s.NATS.ClientURL()), "NATS_PASSWORD=" + wrongPassword,
				[]string{"connect nats", "Authorization Violation"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := strings.Replace(string(shared), natsLine, "nats: "+tc.nats, 1)
				// Its own listen address: the running parser holds the shared one.
				cfg = strings.Replace(cfg, fmt.Sprintf("parser: %q", s.Listen["parser"][0]), fmt.Sprintf("parser: %q", servicetest.FreeAddr(t)), 1)
				path := filepath.Join(t.TempDir(), "parser.yaml")
				if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				cmd := exec.CommandContext(cctx, filepath.Join(dir, "bin", "parser"), "--config", path)
				cmd.Env = append(os.Environ(), "JENKINS_TOKEN="+stack.JenkinsToken, "GERRIT_HTTP_PASSWORD="+stack.GerritPassword,
					"AWS_ACCESS_KEY_ID="+awsKeyID, "AWS_SECRET_ACCESS_KEY="+awsSecret, tc.env)
				out, err := cmd.CombinedOutput()
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
					t.Errorf("the parser ended with %v; want a non-zero exit", err)
				}
				for _, w := range tc.want {
					if !bytes.Contains(out, []byte(w)) {
						t.Errorf("the parser's output does not name the failure (%q):\n%s", w, out)
					}
				}
				find(t, "the output of the parser that could not log in", out)
				t.Logf("%s", bytes.TrimSpace(out))
			})
		}
	})

	stop() // every service flushes its spans and ends its log

	t.Run("service logs", func(t *testing.T) {
		seen := map[string]bool{}
		for _, svc := range stack.Processes() {
			for _, p := range s.Procs(svc) {
				data, err := os.ReadFile(p.LogPath())
				if err != nil {
					t.Fatal(err)
				}
				if len(data) == 0 {
					t.Errorf("%s's log is empty: nothing was checked", svc)
				}
				find(t, p.LogPath(), data)
				seen[p.LogPath()] = true
			}
		}
		// Any other process the stack ran logs there too.
		logs, err := filepath.Glob(filepath.Join(dir, "logs", "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range logs {
			if !seen[f] {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				find(t, f, data)
			}
		}
		// The errors of the spells were logged: the search saw them.
		for _, tc := range []struct{ svc, want string }{{"trigger", "503"}, {"voter", "500"}} {
			data, err := os.ReadFile(s.Procs(tc.svc)[0].LogPath())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data, []byte(tc.want)) {
				t.Errorf("%s's log does not mention the %s it was answered", tc.svc, tc.want)
			}
		}
		// The generated configs name the variables, never their values.
		cfgs, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if len(cfgs) < len(stack.Processes()) {
			t.Errorf("%d generated configs; want one per process and the shared one", len(cfgs))
		}
		for _, f := range cfgs {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			find(t, f, data)
		}
	})

	t.Run("spans", func(t *testing.T) {
		spans := rcv.spans()
		t.Logf("received %d spans in %d export requests", len(spans), rcv.requests())
		if len(spans) < 50 {
			t.Errorf("only %d spans received: the search saw too little", len(spans))
		}
		seen := map[string]bool{}
		failed := map[string]bool{} // services with a span of an error or exception
		for _, sp := range spans {
			seen[sp.service] = true
			if sp.status == tracepb.Status_STATUS_CODE_ERROR || slices.Contains(sp.events, "exception") {
				failed[sp.service] = true
			}
		}
		for _, svc := range stack.Services {
			if !seen["gerritflow-"+svc] {
				t.Errorf("gerritflow-%s exported no span", svc)
			}
		}
		// The trigger was refused by Jenkins, the voter by Gerrit.
		for _, svc := range []string{"trigger", "voter"} {
			if !failed["gerritflow-"+svc] {
				t.Errorf("gerritflow-%s exported no span with an error status or an exception event", svc)
			}
		}
		for i, raw := range rcv.rawRequests() {
			find(t, fmt.Sprintf("span export request %d", i), raw)
		}
	})
}

// storedMsg is one stored message, headers and body.
type storedMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// bytes is everything the message carries, for a substring search.
func (m storedMsg) bytes() []byte {
	var b bytes.Buffer
	b.WriteString(m.Subject)
	for k, vs := range m.Header {
		b.WriteString("\n" + k + ": " + strings.Join(vs, ", "))
	}
	b.WriteString("\n")
	b.Write(m.Data)
	return b.Bytes()
}

// readStream reads every message stored in stream, with an ordered consumer.
func readStream(t *testing.T, js jetstream.JetStream, stream string) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, storedMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		}
		if n == 0 {
			t.Fatalf("stream %s: read %d of %d messages", stream, len(out), want)
		}
	}
	return out
}
