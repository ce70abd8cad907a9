package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// scanRange is the part of a stream a scan reads. Zero values are unbounded.
type scanRange struct {
	Filter         string // subject filter, wildcards allowed
	FromSeq, ToSeq uint64
	Since, Until   time.Time
}

// scanIdle is how long a scan waits for the next message it knows exists
// before it concludes the message was deleted meanwhile (a DLQ redrive).
const scanIdle = 5 * time.Second

// scan calls fn for every message of stream within r, oldest first, with an
// ordered consumer. It stops at the last matching message that existed when
// it began, so what is published into the same stream meanwhile (a replay's
// own copies) is never read.
func scan(ctx context.Context, js jetstream.JetStream, stream string, r scanRange, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, r.Filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // nothing on the subject at all
	}
	if err != nil {
		return fmt.Errorf("last message of %s on %s: %w", r.Filter, stream, err)
	}
	end := last.Sequence
	if r.ToSeq > 0 && r.ToSeq < end {
		end = r.ToSeq
	}
	if r.FromSeq > end || !r.Since.IsZero() && last.Time.Before(r.Since) {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{r.Filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case r.FromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.FromSeq
	case !r.Since.IsZero():
		since := r.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("read %s on %s: %w", r.Filter, stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("read %s on %s: %w", r.Filter, stream, err)
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, scanIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return nil // the rest was deleted while we read
		case err != nil:
			return fmt.Errorf("read %s on %s: %w", r.Filter, stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read %s on %s: %w", r.Filter, stream, err)
		}
		seq := md.Sequence.Stream
		if seq > end || !r.Until.IsZero() && md.Timestamp.After(r.Until) {
			return nil
		}
		if r.Since.IsZero() || !md.Timestamp.Before(r.Since) { // --from-seq with --since
			if err := fn(m, md); err != nil {
				return err
			}
		}
		if seq >= end || md.NumPending == 0 {
			return nil
		}
	}
}

var daysRE = regexp.MustCompile(`^(\d+)d(.*)$`)

// parseTime reads a point in time: RFC 3339 ("2026-03-01T10:00:00Z"), "now",
// or a duration before now ("2h ago", "90m", "3d", "1d12h ago").
func parseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return time.Time{}, nil
	case "now":
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(strings.TrimSpace(strings.TrimSuffix(s, "ago")))
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-03-01T10:00:00Z) or a duration ago (2h ago, 3d): %w", s, err)
	}
	return now.Add(-d), nil
}

func parseAgo(s string) (time.Duration, error) {
	var days time.Duration
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return 0, err
		}
		days, s = time.Duration(n)*24*time.Hour, m[2]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative duration")
	}
	return days + d, nil
}
