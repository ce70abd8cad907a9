package parser

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// TestSpanNamesTheChange: gerrit.raw has no Gerrit-* headers, so the
// parser's span is the first of the trace that can say which change it is.
func TestSpanNamesTheChange(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Start(context.Background(), "parser", config.Otel{}, "", telemetry.WithLogOutput(io.Discard), telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	data := fixture(t, "patchset-created.json")
	ev, err := event.Parse(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tel.Tracer.Start(context.Background(), "process gerrit.raw")
	if _, err := New(1<<20, tel).Handle(ctx, stage.Msg{Data: data, Header: nats.Header{}, Log: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	span.End()
	got := map[string]string{}
	for _, a := range spans.GetSpans()[0].Attributes {
		got[string(a.Key)] = a.Value.Emit()
	}
	for k, want := range map[string]string{
		"gerrit.change": itoa(ev.ChangeNumber()), "gerrit.patchset": itoa(ev.PatchSetNumber()),
		"gerrit.project": ev.ProjectName(), "gerrit.event.type": "patchset-created",
	} {
		if got[k] != want {
			t.Errorf("span attribute %s = %q; want %q (all: %v)", k, got[k], want, got)
		}
	}
}

func itoa(n int) string { return fmt.Sprint(n) }
