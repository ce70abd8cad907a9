package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/streams"
)

// TestSecretsNeverPrinted runs the pipeline with known secrets (the
// simulators' Jenkins token and Gerrit password, which the services read
// from JENKINS_TOKEN and GERRIT_HTTP_PASSWORD), takes a passing change, a
// failing change and a poison record through it, and then looks for either
// secret in every service log, every dead-lettered message and every message
// of every stream (KV buckets included), headers and bodies.
func TestSecretsNeverPrinted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "dev")
	s := startStack(ctx, t, stack.Options{Dir: dir})
	s.ScriptJenkins(300 * time.Millisecond)
	secrets := map[string]string{"the Jenkins token": stack.JenkinsToken, "the Gerrit password": stack.GerritPassword}

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
	for _, c := range changes {
		if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for countMsgs(t, s.JS, "gerritflow.dlq.>") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the poison record never reached the DLQ")
		}
		time.Sleep(300 * time.Millisecond)
	}
	quiesce(t, s)

	find := func(where string, data []byte) {
		t.Helper()
		for what, secret := range secrets {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s holds %s", where, what)
			}
		}
	}

	t.Run("service logs", func(t *testing.T) {
		seen := map[string]bool{}
		for _, svc := range stack.Services {
			for _, p := range s.Procs(svc) {
				data, err := os.ReadFile(p.LogPath())
				if err != nil {
					t.Fatal(err)
				}
				if len(data) == 0 {
					t.Errorf("%s's log is empty: nothing was checked", svc)
				}
				find(p.LogPath(), data)
				seen[p.LogPath()] = true
			}
		}
		// Any other process the stack ran (e.g. the status page) logs there too.
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
				find(f, data)
			}
		}
		// The generated configs name the variables, never their values.
		cfgs, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, f := range cfgs {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			find(f, data)
		}
	})

	t.Run("dead letters", func(t *testing.T) {
		msgs := readStream(t, s.JS, streams.DLQ)
		if len(msgs) == 0 {
			t.Fatal("no dead letter to check")
		}
		for _, m := range msgs {
			if m.Header.Get("Gerritflow-Error") == "" {
				t.Errorf("dead letter %s has no Gerritflow-Error", m.Subject)
			}
			find("dead letter "+m.Subject+" "+m.Header.Get("Gerritflow-Error"), m.bytes())
		}
	})

	t.Run("every message of every stream", func(t *testing.T) {
		total := 0
		for name := range s.JS.StreamNames(ctx).Name() {
			msgs := readStream(t, s.JS, name)
			total += len(msgs)
			for _, m := range msgs {
				find("stream "+name+" message "+m.Subject, m.bytes())
			}
		}
		if total < 20 {
			t.Errorf("only %d messages in all streams: the scan saw too little", total)
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
