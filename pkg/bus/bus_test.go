package bus

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

func TestCarrierKeepsLowercaseKeys(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	h := nats.Header{}
	Inject(ctx, h)
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if got := h.Get("traceparent"); got != want {
		t.Fatalf("h.Get(traceparent) = %q; want %q (headers %v)", got, want, h)
	}
	if _, ok := h["Traceparent"]; ok {
		t.Errorf("canonicalized key Traceparent written: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsRemote() {
		t.Errorf("Extract = %v; want trace %s span %s remote", got, tid, sid)
	}
	// A peer that canonicalized the key is still understood.
	h2 := nats.Header{"Traceparent": {want}}
	if got := trace.SpanContextFromContext(Extract(context.Background(), h2)); got.TraceID() != tid {
		t.Errorf("Extract(Traceparent) trace = %s; want %s", got.TraceID(), tid)
	}
}

func TestRedactURL(t *testing.T) {
	if got, want := redactURL("nats://u:pw@h:4222,nats://h2:4222"), "nats://REDACTED@h:4222,nats://h2:4222"; got != want {
		t.Errorf("redactURL = %q; want %q", got, want)
	}
}
