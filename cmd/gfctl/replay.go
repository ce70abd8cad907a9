package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// subject.VotesReplay is where a replay of ci.votes.posted goes: the voter's
// voter-replay consumer posts the vote again. (ci.votes.posted itself is an
// audit record nobody consumes.)

// replayTarget is the subject a replayed message of subj is published to.
func replayTarget(subj string) string {
	if subj == subject.VotesPosted {
		return subject.VotesReplay
	}
	return subj
}

// storedMsg is one message as a stream holds it.
type storedMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
	Seq     uint64
	Time    time.Time
}

func stored(m jetstream.Msg, md *jetstream.MsgMetadata) storedMsg {
	return storedMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data(), Seq: md.Sequence.Stream, Time: md.Timestamp}
}

// replayMsg is the copy of m that replay id publishes: the same body and
// headers, except a new Nats-Msg-Id (<original msg id or stream:seq>.replay.<id>),
// the replay headers, and the trace context of a new producer span. That span
// starts a trace of its own, linked to the original message's.
func replayMsg(ctx context.Context, tracer trace.Tracer, stream string, m storedMsg, id string) (*nats.Msg, trace.Span) {
	target, msgID := replayTarget(m.Subject), replayMsgID(stream, m, id)
	h := copyHeaders(m.Header)
	h.Set(bus.MsgID, msgID)
	h.Set(bus.Replay, id)
	h.Set(bus.ReplayOf, strconv.FormatUint(m.Seq, 10))
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(append([]attribute.KeyValue{
			semconv.MessagingSystemKey.String("nats"),
			semconv.MessagingDestinationName(target),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingMessageID(msgID),
			semconv.MessagingMessageBodySize(len(m.Data)),
			attribute.String("gerritflow.replay.id", id),
			attribute.String("gerritflow.replay.stream", stream),
			attribute.Int64("gerritflow.replay.of", int64(m.Seq)),
		}, stage.ChangeAttrs(h)...)...),
	}
	if sc := trace.SpanContextFromContext(bus.Extract(context.Background(), m.Header)); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			attribute.String("gerritflow.link", "replayed message"),
		}}))
	}
	ctx, span := tracer.Start(ctx, "send "+target, opts...)
	bus.Inject(ctx, h)
	return &nats.Msg{Subject: target, Data: m.Data, Header: h}, span
}

// replayMsgID is the Nats-Msg-Id of replay id's copy of m. When m is itself
// a copy made by an earlier replay, the id derives from the original's, so
// that a range holding both the original and such a copy publishes one copy:
// the stream drops the second as a duplicate.
func replayMsgID(stream string, m storedMsg, id string) string {
	orig := m.Header.Get(bus.MsgID)
	if r := m.Header.Get(bus.Replay); r != "" {
		orig = strings.TrimSuffix(orig, ".replay."+r)
	}
	if orig == "" {
		orig = stream + ":" + strconv.FormatUint(m.Seq, 10)
	}
	return orig + ".replay." + id
}

// replayItem is one message a replay selected, as a dry run lists it.
type replayItem struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Subject string    `json:"subject"`
	Target  string    `json:"target"`
	Change  string    `json:"change,omitempty"`
	Project string    `json:"project,omitempty"`
	MsgID   string    `json:"msg_id"` // of the copy
}

// replaySummary is what a replay did.
type replaySummary struct {
	ReplayID   string       `json:"replay_id"`
	Subject    string       `json:"subject"`
	Stream     string       `json:"stream"`
	DryRun     bool         `json:"dry_run"`
	Selected   int          `json:"selected"`
	Published  int          `json:"published"`  // stored as new messages
	Duplicates int          `json:"duplicates"` // the stream had them already (same replay id)
	Skipped    int          `json:"skipped"`    // in range, but not of --change / --project
	Errors     int          `json:"errors"`
	FirstError string       `json:"first_error,omitempty"`
	Messages   []replayItem `json:"messages,omitempty"` // dry run: what would be replayed
}

// replayer publishes replay copies asynchronously with a bounded window of
// unacknowledged messages, and counts what the stream answered.
type replayer struct {
	js       jetstream.JetStream
	tracer   trace.Tracer
	window   int
	sum      replaySummary
	pending  []inFlightPub
	progress *progress
}

type inFlightPub struct {
	f    jetstream.PubAckFuture
	span trace.Span
}

// add replays m, or only lists it in a dry run.
func (r *replayer) add(ctx context.Context, m storedMsg) error {
	r.sum.Selected++
	if r.sum.DryRun {
		r.sum.Messages = append(r.sum.Messages, replayItem{Seq: m.Seq, Time: m.Time, Subject: m.Subject, Target: replayTarget(m.Subject),
			Change: m.Header.Get(bus.GerritChange), Project: m.Header.Get(bus.GerritProject), MsgID: replayMsgID(r.sum.Stream, m, r.sum.ReplayID)})
		r.progress.tick(&r.sum, m.Seq)
		return nil
	}
	out, span := replayMsg(ctx, r.tracer, r.sum.Stream, m, r.sum.ReplayID)
	for len(r.pending) >= r.window {
		if err := r.settleOne(ctx); err != nil {
			return err
		}
	}
	f, err := r.js.PublishMsgAsync(out)
	if err != nil {
		r.fail(span, fmt.Errorf("publish %s (replay of seq %d): %w", out.Subject, m.Seq, err))
		span.End()
	} else {
		r.pending = append(r.pending, inFlightPub{f: f, span: span})
	}
	r.progress.tick(&r.sum, m.Seq)
	return nil
}

func (r *replayer) fail(span trace.Span, err error) {
	span.RecordError(err)
	r.sum.Errors++
	if r.sum.FirstError == "" {
		r.sum.FirstError = err.Error()
	}
}

// settleOne waits for the PubAck of the oldest message in flight.
func (r *replayer) settleOne(ctx context.Context) error {
	p := r.pending[0]
	select {
	case ack := <-p.f.Ok():
		if ack.Duplicate {
			r.sum.Duplicates++
		} else {
			r.sum.Published++
		}
	case err := <-p.f.Err():
		m := p.f.Msg()
		r.fail(p.span, fmt.Errorf("publish %s %s: %w", m.Subject, m.Header.Get(bus.MsgID), err))
	case <-ctx.Done():
		return fmt.Errorf("waiting for PubAcks: %w", ctx.Err())
	}
	p.span.End()
	r.pending = r.pending[1:]
	return nil
}

// finish waits for every PubAck.
func (r *replayer) finish(ctx context.Context) error {
	for len(r.pending) > 0 {
		if err := r.settleOne(ctx); err != nil {
			r.sum.Errors += len(r.pending) // unknown: counted as not replayed
			for _, p := range r.pending {
				p.span.End()
			}
			r.pending = nil
			return err
		}
	}
	return nil
}

// progress prints a line on stderr every n messages or every second.
type progress struct {
	w     io.Writer
	every int
	last  time.Time
	count int
}

func (p *progress) tick(s *replaySummary, seq uint64) {
	if p == nil || p.w == nil {
		return
	}
	p.count++
	if p.count%p.every != 0 && time.Since(p.last) < time.Second {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "replay %s: at seq %d: %d selected, %d published, %d duplicates, %d skipped, %d errors\n",
		s.ReplayID, seq, s.Selected, s.Published, s.Duplicates, s.Skipped, s.Errors)
}

// replaySpec is what to replay.
type replaySpec struct {
	scanRange
	Change   int
	Patchset int
	Project  string
	ID       string
	DryRun   bool
	Window   int
}

func (s replaySpec) matches(h nats.Header) bool {
	return (s.Change == 0 || h.Get(bus.GerritChange) == strconv.Itoa(s.Change)) &&
		(s.Patchset == 0 || h.Get(bus.GerritPatchset) == strconv.Itoa(s.Patchset)) &&
		(s.Project == "" || h.Get(bus.GerritProject) == s.Project)
}

// streamOf returns the one stream that holds subject filter.
func streamOf(ctx context.Context, js jetstream.JetStream, filter string) (string, error) {
	if strings.HasPrefix(filter, subject.DLQPrefix) {
		return "", fmt.Errorf("%s is a DLQ subject: use gfctl dlq redrive", filter)
	}
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(filter))
	var found []string
	for n := range names.Name() {
		found = append(found, n)
	}
	if err := names.Err(); err != nil {
		return "", fmt.Errorf("streams of %s: %w", filter, err)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no stream holds %s", filter)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%s spans the streams %s: replay one stream's subjects at a time", filter, strings.Join(found, ", "))
	}
}

// runReplay selects the messages of spec and replays them (or lists them).
func runReplay(ctx context.Context, s *session, spec replaySpec, progressOut io.Writer, progressEvery int) (*replaySummary, error) {
	stream, err := streamOf(ctx, s.js, spec.Filter)
	if err != nil {
		return nil, err
	}
	r := &replayer{js: s.js, tracer: s.tel.Tracer, window: max(spec.Window, 1),
		sum:      replaySummary{ReplayID: spec.ID, Subject: spec.Filter, Stream: stream, DryRun: spec.DryRun},
		progress: &progress{w: progressOut, every: max(progressEvery, 1), last: time.Now()}}
	scanErr := scan(ctx, s.js, stream, spec.scanRange, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		if !spec.matches(m.Headers()) {
			r.sum.Skipped++
			return nil
		}
		return r.add(ctx, stored(m, md))
	})
	// Wait for what was sent even when interrupted: the summary must be true.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return &r.sum, errors.Join(scanErr, r.finish(wctx))
}

var replayIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// replayID returns id, or a new one: "r-" + UTC timestamp + short random.
func (a *app) replayID(id string) (string, error) {
	if id != "" {
		if !replayIDRE.MatchString(id) {
			return "", fmt.Errorf("--id %q: use up to 64 letters, digits, '.', '_', ':' or '-'", id)
		}
		return id, nil
	}
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "r-" + a.now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b), nil
}

func (a *app) replayCmd() *cobra.Command {
	var (
		spec          replaySpec
		since, until  string
		all           bool
		progressEvery int
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay SUBJECT",
		Short: "Publish a subject's messages again with a replay id, so that its stage redoes the work",
		Long: `Selects messages of the stream that holds SUBJECT (wildcards allowed: ci.votes.>,
gerrit.events.>) by time, stream sequence, change and project, and publishes each
again with the same body and headers except: Nats-Msg-Id "<original>.replay.<id>",
Gerritflow-Replay: <id>, Gerritflow-Replay-Of: <original sequence>, and a new trace
linked to the original's. The consuming stage then redoes its work once per replay id:

  gerrit.events.*      the trigger starts a new build set (new builds, a new vote)
  ci.builds.completed  the voter posts its vote again (no new builds)
  ci.votes.posted      published to ci.votes.replay: the voter posts that vote again

Replaying again with the same --id publishes nothing new (the stream drops the same
Msg-Ids) and posts nothing new (the replay id is in every idempotency key).`,
		Example: `  gfctl replay ci.builds.completed --since "2h ago" --until "30m ago" --dry-run
  gfctl replay ci.builds.completed --since 2026-03-01T10:00:00Z --until 2026-03-01T12:00:00Z
  gfctl replay ci.votes.posted --change 1234
  gfctl replay gerrit.events.> --from-seq 5000 --to-seq 5100 --project platform/core`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Filter = args[0]
			now := a.now()
			var err error
			if spec.Since, err = parseTime(since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if spec.Until, err = parseTime(until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			if !spec.Since.IsZero() && !spec.Until.IsZero() && spec.Until.Before(spec.Since) {
				return fmt.Errorf("--until %s is before --since %s", stamp(spec.Until), stamp(spec.Since))
			}
			if spec.ToSeq > 0 && spec.ToSeq < spec.FromSeq {
				return fmt.Errorf("--to-seq %d is below --from-seq %d", spec.ToSeq, spec.FromSeq)
			}
			if !all && spec.scanRange == (scanRange{Filter: spec.Filter}) && spec.Change == 0 && spec.Project == "" {
				return errors.New("no selection: pass --since/--until, --from-seq/--to-seq, --change or --project (or --all for the whole stream)")
			}
			if spec.ID, err = a.replayID(spec.ID); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			errOut := cmd.ErrOrStderr()
			if !spec.DryRun {
				fmt.Fprintf(errOut, "replay %s: replaying %s\n", spec.ID, spec.Filter)
			}
			sum, runErr := runReplay(ctx, s, spec, errOut, progressEvery)
			if sum == nil {
				return runErr
			}
			if err := a.printReplay(cmd.OutOrStdout(), sum); err != nil {
				return err
			}
			if runErr != nil {
				return runErr
			}
			if sum.Errors > 0 {
				return fmt.Errorf("%d of %d messages not replayed: %s", sum.Errors, sum.Selected, sum.FirstError)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "from this time: RFC 3339 or a duration ago (\"2h ago\", \"3d\")")
	f.StringVar(&until, "until", "", "up to this time: RFC 3339 or a duration ago")
	f.Uint64Var(&spec.FromSeq, "from-seq", 0, "from this stream sequence")
	f.Uint64Var(&spec.ToSeq, "to-seq", 0, "up to this stream sequence (inclusive)")
	f.IntVar(&spec.Change, "change", 0, "only messages of this change (Gerrit-Change header)")
	f.StringVar(&spec.Project, "project", "", "only messages of this project (Gerrit-Project header)")
	f.BoolVar(&spec.DryRun, "dry-run", false, "list what would be replayed; publish nothing")
	f.StringVar(&spec.ID, "id", "", "replay id (default r-<UTC time>-<random>); the same id again replays nothing twice")
	f.BoolVar(&all, "all", false, "allow a replay of the whole stream when no other selection is given")
	f.IntVar(&spec.Window, "window", 256, "messages published and not yet acknowledged, at most")
	f.IntVar(&progressEvery, "progress-every", 1000, "print progress on stderr every N messages (and every second)")
	f.DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func (a *app) printReplay(w io.Writer, s *replaySummary) error {
	if a.json {
		return writeJSON(w, s)
	}
	if s.DryRun {
		if len(s.Messages) > 0 {
			t := newTable(w, "SEQ", "TIME", "SUBJECT", "TO", "CHANGE", "PROJECT", "NEW MSG-ID")
			for _, m := range s.Messages {
				t.row(strconv.FormatUint(m.Seq, 10), stamp(m.Time), m.Subject, m.Target, m.Change, m.Project, m.MsgID)
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintln(w)
		}
		_, err := fmt.Fprintf(w, "dry run of replay %s on %s (stream %s): %d would be replayed, %d skipped; nothing was published\n",
			s.ReplayID, s.Subject, s.Stream, s.Selected, s.Skipped)
		return err
	}
	_, err := fmt.Fprintf(w, "replay %s on %s (stream %s): %d selected, %d published, %d duplicates, %d skipped, %d errors\n",
		s.ReplayID, s.Subject, s.Stream, s.Selected, s.Published, s.Duplicates, s.Skipped, s.Errors)
	return err
}
