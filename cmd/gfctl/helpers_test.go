package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/natstest"
)

// keptSpans is an in-memory exporter that keeps its spans when gfctl shuts
// its tracer down at the end of a command.
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

// harness is a provisioned NATS server and gfctl run against it in-process.
type harness struct {
	t     *testing.T
	srv   *natstest.Server
	js    jetstream.JetStream
	spans *tracetest.InMemoryExporter
	now   time.Time // zero: the clock
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv, js := natstest.JetStream(t)
	return &harness{t: t, srv: srv, js: js, spans: tracetest.NewInMemoryExporter()}
}

// run executes gfctl with args (and --nats) and returns stdout, stderr and the error.
func (h *harness) run(args ...string) (string, string, error) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	a := &app{getenv: func(string) string { return "" }, exporter: keptSpans{h.spans}, now: func() time.Time {
		if h.now.IsZero() {
			return time.Now()
		}
		return h.now
	}}
	root := a.root(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--nats", h.srv.URL()))
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// runJSON runs gfctl with --json, fails the test on an error and decodes stdout into v.
func (h *harness) runJSON(v any, args ...string) {
	h.t.Helper()
	out, errOut, err := h.run(append(args, "--json")...)
	if err != nil {
		h.t.Fatalf("gfctl %v = %v\nstderr: %s", args, err, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		h.t.Fatalf("gfctl %v --json printed %q: %v", args, out, err)
	}
}

// publish stores a message and returns its stream sequence and time.
func (h *harness) publish(subj string, data []byte, hdr nats.Header, msgID string) (uint64, time.Time) {
	h.t.Helper()
	m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	for k, v := range hdr {
		m.Header[k] = append([]string(nil), v...)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := h.js.PublishMsg(context.Background(), m, opts...)
	if err != nil {
		h.t.Fatalf("publish %s: %v", subj, err)
	}
	st, err := h.js.Stream(context.Background(), ack.Stream)
	if err != nil {
		h.t.Fatal(err)
	}
	raw, err := st.GetMsg(context.Background(), ack.Sequence)
	if err != nil {
		h.t.Fatal(err)
	}
	return ack.Sequence, raw.Time
}

// put writes a KV record.
func (h *harness) put(bucket, key string, v any) {
	h.t.Helper()
	kv, err := h.js.KeyValue(context.Background(), bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, build.Encode(v)); err != nil {
		h.t.Fatal(err)
	}
}

// messages returns every message on subj (subject filter), oldest first.
func (h *harness) messages(subj string) []*jetstream.RawStreamMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := h.js.StreamNameBySubject(ctx, subj)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	err = scan(ctx, h.js, stream, scanRange{Filter: subj}, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		out = append(out, &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp})
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// exists reports whether stream still holds seq.
func (h *harness) exists(stream string, seq uint64) bool {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = st.GetMsg(context.Background(), seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return true
}
