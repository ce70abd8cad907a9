package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// dlqHeaders are the headers the stage loop adds when it dead-letters a
// message; a redrive removes them.
var dlqHeaders = []string{bus.Error, bus.Stage, bus.OriginSubject, bus.OriginSequence, bus.OriginDelivered}

// dlqRow is one message of the DLQ as gfctl dlq list shows it.
type dlqRow struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Subject       string    `json:"subject"`
	Stage         string    `json:"stage"`
	OriginSubject string    `json:"origin_subject"`
	OriginSeq     string    `json:"origin_seq"`
	Delivered     string    `json:"delivered,omitempty"`
	Change        string    `json:"change,omitempty"`
	Error         string    `json:"error"`
}

func newDLQRow(seq uint64, t time.Time, subj string, h nats.Header) dlqRow {
	return dlqRow{Seq: seq, Time: t, Subject: subj, Stage: h.Get(bus.Stage), OriginSubject: h.Get(bus.OriginSubject),
		OriginSeq: h.Get(bus.OriginSequence), Delivered: h.Get(bus.OriginDelivered), Change: h.Get(bus.GerritChange), Error: h.Get(bus.Error)}
}

// dlqFilter is the DLQ subject of service, or all of them.
func dlqFilter(service string) string {
	if service == "" {
		return subject.DLQPrefix + ">"
	}
	return subject.DLQ(service)
}

func listDLQ(ctx context.Context, js jetstream.JetStream, service string) ([]dlqRow, error) {
	rows := []dlqRow{}
	err := scan(ctx, js, streams.DLQ, scanRange{Filter: dlqFilter(service)}, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		rows = append(rows, newDLQRow(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers()))
		return nil
	})
	return rows, err
}

func (a *app) dlqListCmd() *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the dead-lettered messages: sequence, time, stage, origin, error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			rows, err := listDLQ(ctx, s.js, service)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			if len(rows) == 0 {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), "the DLQ is empty")
				return err
			}
			t := newTable(cmd.OutOrStdout(), "SEQ", "TIME", "STAGE", "ORIGIN", "CHANGE", "ERROR")
			for _, r := range rows {
				t.row(strconv.FormatUint(r.Seq, 10), stamp(r.Time), r.Stage, r.OriginSubject+"#"+r.OriginSeq, r.Change, oneLine(r.Error, 100))
			}
			if err := t.flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "\n%d messages; gfctl dlq show SEQ for one, gfctl dlq redrive SEQ... once the cause is fixed\n", len(rows))
			return err
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only this service's DLQ (parser, trigger, monitor, voter)")
	return cmd
}

// dlqMsg is one DLQ message in full, as gfctl dlq show prints it.
type dlqMsg struct {
	Seq        uint64              `json:"seq"`
	Subject    string              `json:"subject"`
	Time       time.Time           `json:"time"`
	Headers    map[string][]string `json:"headers"`
	Body       *string             `json:"body,omitempty"`        // UTF-8 text
	BodyBase64 []byte              `json:"body_base64,omitempty"` // anything else
}

func (a *app) dlqShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one dead-lettered message: every header and the body",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("sequence %q: want a number (see gfctl dlq list)", args[0])
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			m, err := getDLQ(ctx, s.js, seq)
			if err != nil {
				return err
			}
			out := dlqMsg{Seq: m.Sequence, Subject: m.Subject, Time: m.Time, Headers: m.Header}
			if utf8.Valid(m.Data) {
				body := string(m.Data)
				out.Body = &body
			} else {
				out.BodyBase64 = m.Data
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			return printDLQMsg(cmd.OutOrStdout(), m)
		},
	}
}

func getDLQ(ctx context.Context, js jetstream.JetStream, seq uint64) (*jetstream.RawStreamMsg, error) {
	st, err := js.Stream(ctx, streams.DLQ)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", streams.DLQ, err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("DLQ message %d: not found (redriven already, or never there: see gfctl dlq list)", seq)
	}
	if err != nil {
		return nil, fmt.Errorf("DLQ message %d: %w", seq, err)
	}
	return m, nil
}

func printDLQMsg(w io.Writer, m *jetstream.RawStreamMsg) error {
	t := newTable(w, "FIELD", "VALUE")
	t.row("seq", strconv.FormatUint(m.Sequence, 10))
	t.row("subject", m.Subject)
	t.row("time", stamp(m.Time))
	for _, k := range slices.Sorted(maps.Keys(m.Header)) {
		for _, v := range m.Header[k] {
			t.row(k, v)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if !utf8.Valid(m.Data) {
		_, err := fmt.Fprintf(w, "\nbody: %d bytes, not UTF-8 (use --json for base64)\n", len(m.Data))
		return err
	}
	_, err := fmt.Fprintf(w, "\nbody (%d bytes):\n%s\n", len(m.Data), m.Data)
	return err
}

// redriveRow is the outcome of one message of gfctl dlq redrive.
type redriveRow struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"` // where it went (or would go)
	MsgID   string `json:"msg_id"`
	Outcome string `json:"outcome"` // redriven, duplicate, would-redrive, skipped, error
	Error   string `json:"error,omitempty"`
}

func (a *app) dlqRedriveCmd() *cobra.Command {
	var (
		service      string
		all, dryRun  bool
		deadlineFlag time.Duration
	)
	cmd := &cobra.Command{
		Use:   "redrive SEQ...|--all",
		Short: "Publish dead-lettered messages again to their origin subject, then delete them from the DLQ",
		Long: `Republishes each message's original body to its Gerritflow-Origin-Subject, with
its original headers minus the DLQ ones and a new Nats-Msg-Id "redrive.<dlq seq>",
and deletes it from the DLQ once the stream acknowledged it. A message whose cause
is not fixed fails again and comes back to the DLQ under a new sequence.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return errors.New("name the DLQ sequences to redrive, or pass --all")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadlineFlag)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			var seqs []uint64
			if all {
				rows, err := listDLQ(ctx, s.js, service)
				if err != nil {
					return err
				}
				for _, r := range rows {
					seqs = append(seqs, r.Seq)
				}
			}
			for _, arg := range args {
				seq, err := strconv.ParseUint(arg, 10, 64)
				if err != nil {
					return fmt.Errorf("sequence %q: want a number (see gfctl dlq list)", arg)
				}
				seqs = append(seqs, seq)
			}
			rows, err := redrive(ctx, s, seqs, service, dryRun)
			if err != nil {
				return err
			}
			return a.printRedrive(cmd, rows, dryRun)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "redrive every message of the DLQ (of --service)")
	f.StringVar(&service, "service", "", "only messages of this service's DLQ")
	f.BoolVar(&dryRun, "dry-run", false, "show what would be redriven; change nothing")
	f.DurationVar(&deadlineFlag, "timeout", 10*time.Minute, "give up after this long")
	return cmd
}

// redrive republishes each DLQ message of seqs to its origin and deletes it
// from the DLQ after the PubAck.
func redrive(ctx context.Context, s *session, seqs []uint64, service string, dryRun bool) ([]redriveRow, error) {
	st, err := s.js.Stream(ctx, streams.DLQ)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", streams.DLQ, err)
	}
	rows := []redriveRow{}
	for _, seq := range seqs {
		r := redriveRow{Seq: seq, MsgID: "redrive." + strconv.FormatUint(seq, 10)}
		fail := func(err error) { r.Outcome, r.Error = "error", err.Error(); rows = append(rows, r) }
		m, err := getDLQ(ctx, s.js, seq)
		if err != nil {
			fail(err)
			continue
		}
		r.Subject = m.Header.Get(bus.OriginSubject)
		if service != "" && m.Subject != subject.DLQ(service) {
			r.Outcome, r.Error = "skipped", "not in the DLQ of "+service
			rows = append(rows, r)
			continue
		}
		if r.Subject == "" {
			fail(fmt.Errorf("DLQ message %d has no %s header: cannot tell where it came from", seq, bus.OriginSubject))
			continue
		}
		if dryRun {
			r.Outcome = "would-redrive"
			rows = append(rows, r)
			continue
		}
		out := redriveMsg(ctx, s.tel.Tracer, m, r.MsgID)
		ack, err := s.js.PublishMsg(ctx, out)
		if err != nil {
			fail(fmt.Errorf("publish to %s: %w", r.Subject, err))
			continue
		}
		r.Outcome = "redriven"
		if ack.Duplicate { // redriven before, but the delete failed
			r.Outcome = "duplicate"
		}
		if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			fail(fmt.Errorf("published to %s, but not deleted from the DLQ (redrive it again: the copy is deduplicated): %w", r.Subject, err))
			continue
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// redriveMsg is the copy of the DLQ message m for its origin subject: the
// original headers without the DLQ ones, a new Msg-Id, and a producer span
// that continues the message's trace.
func redriveMsg(ctx context.Context, tracer trace.Tracer, m *jetstream.RawStreamMsg, msgID string) *nats.Msg {
	origin := m.Header.Get(bus.OriginSubject)
	h := copyHeaders(m.Header)
	for _, k := range dlqHeaders {
		h.Del(k)
	}
	h.Set(bus.MsgID, msgID)
	ctx = bus.Extract(ctx, m.Header)
	_, span := tracer.Start(ctx, "send "+origin, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(append([]attribute.KeyValue{
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingDestinationName(origin),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingMessageID(msgID),
			semconv.MessagingMessageBodySize(len(m.Data)),
			attribute.Int64("gerritflow.redrive.dlq_sequence", int64(m.Sequence)),
		}, stage.ChangeAttrs(h)...)...))
	defer span.End()
	bus.Inject(trace.ContextWithSpan(ctx, span), h)
	return &nats.Msg{Subject: origin, Data: m.Data, Header: h}
}

// copyHeaders copies h without the headers that steer the server
// (Nats-Msg-Id, Nats-Expected-*, ...) and without the trace context: the
// copy gets its own.
func copyHeaders(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "nats-") || strings.EqualFold(k, bus.Traceparent) || strings.EqualFold(k, bus.Tracestate) {
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}

func (a *app) printRedrive(cmd *cobra.Command, rows []redriveRow, dryRun bool) error {
	counts := map[string]int{}
	for _, r := range rows {
		counts[r.Outcome]++
	}
	if a.json {
		if err := writeJSON(cmd.OutOrStdout(), struct {
			DryRun   bool         `json:"dry_run"`
			Messages []redriveRow `json:"messages"`
		}{dryRun, rows}); err != nil {
			return err
		}
	} else {
		w := cmd.OutOrStdout()
		t := newTable(w, "SEQ", "TO", "MSG-ID", "OUTCOME", "ERROR")
		for _, r := range rows {
			t.row(strconv.FormatUint(r.Seq, 10), r.Subject, r.MsgID, r.Outcome, oneLine(r.Error, 100))
		}
		if err := t.flush(); err != nil {
			return err
		}
		if dryRun {
			fmt.Fprintf(w, "\ndry run: %d would be redriven, %d skipped, %d errors; nothing changed\n", counts["would-redrive"], counts["skipped"], counts["error"])
		} else {
			fmt.Fprintf(w, "\n%d redriven (%d already were), %d skipped, %d errors\n", counts["redriven"]+counts["duplicate"], counts["duplicate"], counts["skipped"], counts["error"])
		}
	}
	if n := counts["error"]; n > 0 {
		return fmt.Errorf("%d of %d DLQ messages not redriven", n, len(rows))
	}
	return nil
}
