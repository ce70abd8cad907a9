package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// Observed is what the run left behind, read from the simulators' own
// records, the streams and the KV buckets.
type Observed struct {
	RawMsgs     int            // messages on gerrit.raw
	RawDistinct int            // distinct Kinesis shard:sequence among them
	EventIDs    map[string]int // Nats-Msg-Id -> messages on gerrit.events
	Sets        map[string]build.Set
	Builds      map[string]build.Build // builds KV, by key (= GERRITFLOW_BUILD_ID)
	Votes       map[string]build.Vote
	Jenkins     []jenkinssim.BuildRecord // every build and waiting queue item of every configured job
	Reviews     []gerritsim.Review
	DLQ         []DLQEntry
	Consumers   []ConsumerState
	SinkLost    int64 // Gerrit events the Kinesis sink gave up on
	// Messages per build id on ci.builds.triggered and ci.builds.completed,
	// and the votes announced on ci.votes.posted, in order.
	Triggered, Completed map[string]int
	Announced            []build.Vote
}

// DLQEntry is one dead-lettered message.
type DLQEntry struct {
	Subject, Stage, Error, Origin string
	Data                          []byte
}

// ConsumerState is one durable consumer's backlog.
type ConsumerState struct {
	Stream, Name        string
	Pending, AckPending uint64
	Redelivered         int
}

// Durables are the consumers that must end with nothing pending or unacked.
var Durables = []struct{ Stream, Name string }{
	{streams.GerritRaw, "parser"}, {streams.GerritEvents, "trigger"}, {streams.CIBuilds, "monitor"},
	{streams.CIBuilds, "voter"}, {streams.CIVotes, "voter-replay"},
}

// Observe reads everything the checks need.
func Observe(ctx context.Context, s *stack.Stack, jobs []config.Job) (*Observed, error) {
	o := &Observed{EventIDs: map[string]int{}, SinkLost: s.SinkFailures()}
	seen := map[string]bool{}
	if err := eachMsg(ctx, s.JS, streams.GerritRaw, true, func(m jetstream.Msg) {
		o.RawMsgs++
		seen[m.Headers().Get(bus.KinesisShard)+":"+m.Headers().Get(bus.KinesisSequence)] = true
	}); err != nil {
		return nil, err
	}
	o.RawDistinct = len(seen)
	if err := eachMsg(ctx, s.JS, streams.GerritEvents, true, func(m jetstream.Msg) {
		o.EventIDs[m.Headers().Get(bus.MsgID)]++
	}); err != nil {
		return nil, err
	}
	if err := eachMsg(ctx, s.JS, streams.DLQ, false, func(m jetstream.Msg) {
		h := m.Headers()
		o.DLQ = append(o.DLQ, DLQEntry{Subject: m.Subject(), Stage: h.Get(bus.Stage), Error: h.Get(bus.Error),
			Origin: h.Get(bus.OriginSubject), Data: append([]byte(nil), m.Data()...)})
	}); err != nil {
		return nil, err
	}
	o.Triggered, o.Completed = map[string]int{}, map[string]int{}
	var bad error
	if err := eachMsg(ctx, s.JS, streams.CIBuilds, false, func(m jetstream.Msg) {
		var b struct {
			BuildID string `json:"build_id"`
		}
		if err := build.Decode(m.Data(), &b); err != nil {
			bad = fmt.Errorf("%s: %w", m.Subject(), err)
		}
		switch m.Subject() {
		case subject.BuildsTriggered:
			o.Triggered[b.BuildID]++
		case subject.BuildsCompleted:
			o.Completed[b.BuildID]++
		}
	}); err != nil {
		return nil, err
	}
	if err := eachMsg(ctx, s.JS, streams.CIVotes, false, func(m jetstream.Msg) {
		if m.Subject() != subject.VotesPosted {
			return
		}
		var v build.Vote
		if err := build.Decode(m.Data(), &v); err != nil {
			bad = fmt.Errorf("%s: %w", m.Subject(), err)
		}
		o.Announced = append(o.Announced, v)
	}); err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	var err error
	if o.Sets, err = readKV[build.Set](ctx, s.JS, streams.BucketBuildSets); err != nil {
		return nil, err
	}
	if o.Builds, err = readKV[build.Build](ctx, s.JS, streams.BucketBuilds); err != nil {
		return nil, err
	}
	if o.Votes, err = readKV[build.Vote](ctx, s.JS, streams.BucketVotes); err != nil {
		return nil, err
	}
	done := map[string]bool{}
	for _, j := range jobs {
		if done[j.JenkinsJob] {
			continue
		}
		done[j.JenkinsJob] = true
		o.Jenkins = append(o.Jenkins, s.Jenkins.Builds(j.JenkinsJob)...)
		o.Jenkins = append(o.Jenkins, s.Jenkins.Queued(j.JenkinsJob)...)
	}
	o.Reviews = s.Gerrit.Reviews()
	if o.Consumers, err = consumerStates(ctx, s.JS); err != nil {
		return nil, err
	}
	return o, nil
}

func consumerStates(ctx context.Context, js jetstream.JetStream) ([]ConsumerState, error) {
	var out []ConsumerState
	for _, d := range Durables {
		c, err := js.Consumer(ctx, d.Stream, d.Name)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", d.Name, d.Stream, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", d.Name, d.Stream, err)
		}
		out = append(out, ConsumerState{Stream: d.Stream, Name: d.Name, Pending: info.NumPending,
			AckPending: uint64(info.NumAckPending), Redelivered: info.NumRedelivered})
	}
	return out, nil
}

// eachMsg calls fn with every message of stream, oldest first, through an
// ordered consumer (headers only if asked).
func eachMsg(ctx context.Context, js jetstream.JetStream, stream string, headersOnly bool, fn func(jetstream.Msg)) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	total := info.State.Msgs
	if total == 0 {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: headersOnly})
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	var got uint64
	idle := 0
	for got < total {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			fn(m)
			n++
			got++
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				total = got // the last message there is now
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if n == 0 {
			if idle++; idle > 5 {
				return fmt.Errorf("read %s: %d of %d messages, then nothing for 10s", stream, got, total)
			}
		}
	}
	return nil
}

// readKV returns every live value of bucket, decoded.
func readKV[T any](ctx context.Context, js jetstream.JetStream, bucket string) (map[string]T, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", bucket, err)
	}
	defer w.Stop()
	out := map[string]T{}
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // everything there was has been delivered
				return out, nil
			}
			var v T
			if err := build.Decode(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("kv %s/%s: %w", bucket, e.Key(), err)
			}
			out[e.Key()] = v
		case <-timeout:
			return nil, fmt.Errorf("kv %s: read timed out", bucket)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
