package parser

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../../pkg/event/testdata/events/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTel(t *testing.T) *telemetry.Telemetry {
	tel, err := telemetry.Start(context.Background(), "parser", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

func TestHandle(t *testing.T) {
	p := New(1<<20, newTel(t))
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name        string
		data        []byte
		header      nats.Header
		wantSubject string
		wantIDPart  string
		wantErr     string
	}{
		{"patchset-created", fixture(t, "patchset-created.json"), nil, "gerrit.events.patchset-created", "patchset-created.", ""},
		{"enveloped", fixture(t, "patchset-created-envelope.json"), nil, "gerrit.events.patchset-created", "patchset-created.", ""},
		{"recheck", fixture(t, "comment-added-recheck.json"), nil, "gerrit.events.comment-added", "comment-added.", ""},
		{"replayed", fixture(t, "patchset-created.json"), nats.Header{bus.Replay: {"r1"}, bus.ReplayOf: {"12"}}, "gerrit.events.patchset-created", ".replay.r1", ""},
		{"meta ref dropped", fixture(t, "ref-updated-meta.json"), nil, "", "", ""},
		{"not json", []byte("\x00\x01garbage"), nats.Header{bus.KinesisShard: {"shardId-1"}, bus.KinesisStream: {"s"}, bus.KinesisSequence: {"42"}}, "", "", "s/shardId-1/42"},
		{"missing type", fixture(t, "bad-missing-type.json"), nil, "", "", "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.header
			if h == nil {
				h = nats.Header{}
			}
			outs, err := p.Handle(context.Background(), stage.Msg{Data: tt.data, Header: h, Log: log})
			if tt.wantErr != "" {
				if err == nil || !stage.IsPermanent(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Handle = %v; want a permanent error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Handle = %v", err)
			}
			if tt.wantSubject == "" {
				if len(outs) != 0 {
					t.Fatalf("Handle = %d outputs; want none", len(outs))
				}
				return
			}
			if len(outs) != 1 || outs[0].Subject != tt.wantSubject || !strings.Contains(outs[0].MsgID, tt.wantIDPart) {
				t.Fatalf("Handle = %+v; want one output on %s with id containing %q", outs, tt.wantSubject, tt.wantIDPart)
			}
			if outs[0].Header.Get(bus.GerritChange) == "" || outs[0].Header.Get(bus.GerritProject) == "" {
				t.Errorf("output headers %v lack Gerrit-Change / Gerrit-Project", outs[0].Header)
			}
		})
	}
}

// TestSameEventTwiceIsOneMessage runs the stage on a real server: the same
// Gerrit event read as two Kinesis records (two raw Msg-Ids) yields one event.
func TestSameEventTwiceIsOneMessage(t *testing.T) {
	_, js := natstest.JetStream(t)
	tel := newTel(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stage.Run(ctx, js, Spec, New(1<<20, tel), tel) }()
	t.Cleanup(func() { cancel(); <-done })

	ev := fixture(t, "patchset-created.json")
	for i, id := range []string{"gerrit-events:shardId-0:1", "gerrit-events:shardId-0:2"} {
		data := ev
		if i == 1 {
			data = append([]byte("  "), ev...) // another record, other bytes, same event
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "gerrit.raw", Data: data, Header: nats.Header{}}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "gerrit.raw", Data: []byte("{not json")}, jetstream.WithMsgID("x:3")); err != nil {
		t.Fatal(err)
	}
	dlq := natstest.Collect(t, js, "gerritflow.dlq.parser", 1, 10*time.Second)
	if !strings.Contains(dlq[0].Headers().Get(bus.Error), "invalid gerrit event") {
		t.Errorf("DLQ reason = %q", dlq[0].Headers().Get(bus.Error))
	}
	natstest.Collect(t, js, "gerrit.events.patchset-created", 1, 10*time.Second)
	if n := natstest.Count(t, js, "gerrit.events.>"); n != 1 {
		t.Errorf("gerrit.events holds %d messages; want 1", n)
	}
}
