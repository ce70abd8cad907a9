// Package parser turns the raw Kinesis records on gerrit.raw into normalized
// Gerrit events on gerrit.events.<type>, each with its semantic identity as
// Nats-Msg-Id, and sends what cannot be parsed to the DLQ with the reason.
package parser

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Spec is the parser's consumer.
var Spec = stage.Spec{Service: "parser", Stream: streams.GerritRaw, Durable: "parser"}

// Needs is what the parser binds to.
var Needs = streams.Need{Streams: []string{streams.GerritRaw, streams.GerritEvents, streams.DLQ}, Consumers: []string{"parser"}}

// Parser is the stage handler.
type Parser struct {
	maxBytes int
	events   *prometheus.CounterVec
}

// New returns a parser that refuses records over maxBytes.
func New(maxBytes int, tel *telemetry.Telemetry) *Parser {
	return &Parser{maxBytes: maxBytes, events: tel.Counter("events_total", "Gerrit events by type and decision (published, dropped).", "type", "decision")}
}

// Handle parses one record. The output's body is the event JSON as Gerrit
// wrote it (an events-broker envelope removed), so every later stage derives
// the same identity from it.
func (p *Parser) Handle(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	ev, err := event.Parse(m.Data, p.maxBytes)
	if err != nil {
		return nil, stage.Permanent(fmt.Errorf("parse record %s: %w", origin(m.Header), err))
	}
	// gerrit.raw carries no Gerrit-* headers: the parser is the first to know
	// the change, and its consumer span is the first of the trace to name it.
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(telemetry.ChangeAttrs(ev.ProjectName(), ev.ChangeNumber(), ev.PatchSetNumber())...)
	span.SetAttributes(telemetry.AttrEventType.String(ev.Type))
	if ev.IsMetaRef() { // every upload also updates refs/changes/*/meta: noise
		p.events.WithLabelValues(ev.Type, "dropped").Inc()
		m.Log.DebugContext(ctx, "event dropped", telemetry.KeyDecision, "drop", telemetry.KeyReason, "internal ref", "ref", ev.RefUpdate.RefName)
		return nil, nil
	}
	h := nats.Header{}
	bus.SetChange(h, ev.ProjectName(), ev.ChangeNumber(), ev.PatchSetNumber())
	h.Set(bus.GerritEventType, ev.Type)
	id := ev.ID()
	if r := m.Header.Get(bus.Replay); r != "" {
		// A replay is a deliberate redo: its id must escape the duplicate window.
		h.Set(bus.Replay, r)
		h.Set(bus.ReplayOf, m.Header.Get(bus.ReplayOf))
		id += ".replay." + r
	}
	p.events.WithLabelValues(ev.Type, "published").Inc()
	m.Log.InfoContext(ctx, "event", telemetry.KeyDecision, "publish", "type", ev.Type, "id", id,
		telemetry.KeyChange, ev.ChangeNumber(), telemetry.KeyPatchset, ev.PatchSetNumber(), telemetry.KeyProject, ev.ProjectName())
	return []stage.Out{{Subject: subject.Event(ev.Type), MsgID: id, Data: ev.Raw, Header: h}}, nil
}

func origin(h nats.Header) string {
	if s := h.Get(bus.KinesisShard); s != "" {
		return h.Get(bus.KinesisStream) + "/" + s + "/" + h.Get(bus.KinesisSequence)
	}
	return h.Get(bus.MsgID)
}
