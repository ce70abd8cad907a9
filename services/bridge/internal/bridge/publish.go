package bridge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// HeaderSubsequence is the index of a KPL user record within its aggregate
// (the KCL's subSequenceNumber). It is set only on de-aggregated records.
const HeaderSubsequence = "Kinesis-Subsequence-Number"

// Span attributes of the bridge's producer spans (besides the messaging ones).
const (
	attrShard     = attribute.Key("aws.kinesis.shard_id")
	attrSequence  = attribute.Key("aws.kinesis.sequence_number")
	attrPartition = attribute.Key("aws.kinesis.partition_key")
	attrArrival   = attribute.Key("aws.kinesis.approximate_arrival_timestamp")
	// attrArrivalAge is how long the record sat in Kinesis before the
	// bridge read it (milliseconds): the first wait of the change's story.
	attrArrivalAge = attribute.Key("gerritflow.kinesis.arrival_age_ms")
)

// outMsg is one message being published for a Kinesis record.
type outMsg struct {
	msg  *nats.Msg
	id   string // Nats-Msg-Id of the gerrit.raw message
	dlq  bool   // msg is the dead letter
	span trace.Span
}

// MsgID is the Nats-Msg-Id of a record: "<stream>:<shard>:<sequence>", plus
// ":<subindex>" for a KPL user record (sub < 0: not aggregated).
func MsgID(stream, shard, seq string, sub int) string {
	id := stream + ":" + shard + ":" + seq
	if sub >= 0 {
		id += ":" + strconv.Itoa(sub)
	}
	return id
}

// messages turns one Kinesis record into the messages to publish: one, one per
// KPL user record, or a dead letter (a broken aggregate, a record too large).
// Each gets a new trace: its producer span is the root of the event's trace.
func (b *Bridge) messages(shard string, r types.Record) []*outMsg {
	seq := aws.ToString(r.SequenceNumber)
	base := nats.Header{}
	base.Set(bus.KinesisStream, b.opts.Stream)
	base.Set(bus.KinesisShard, shard)
	base.Set(bus.KinesisSequence, seq)
	base.Set(bus.KinesisPartition, aws.ToString(r.PartitionKey))
	if r.ApproximateArrivalTimestamp != nil {
		base.Set(bus.KinesisArrival, r.ApproximateArrivalTimestamp.UTC().Format(time.RFC3339Nano))
	}
	if !IsAggregated(r.Data) {
		return []*outMsg{b.message(shard, seq, -1, base, r.Data, r.ApproximateArrivalTimestamp)}
	}
	users, err := Deaggregate(r.Data)
	if err != nil {
		m := b.message(shard, seq, -1, base, nil, r.ApproximateArrivalTimestamp)
		m.msg.Data = r.Data
		return []*outMsg{b.deadLetter(m, "kpl", err.Error())}
	}
	out := make([]*outMsg, len(users))
	for i, u := range users {
		h := nats.Header{}
		for k, v := range base {
			h[k] = append([]string(nil), v...)
		}
		h.Set(bus.KinesisPartition, u.PartitionKey)
		h.Set(HeaderSubsequence, strconv.Itoa(i))
		out[i] = b.message(shard, seq, i, h, u.Data, r.ApproximateArrivalTimestamp)
	}
	return out
}

// message builds one gerrit.raw message with its producer span, or its dead
// letter if it cannot fit in a NATS message.
func (b *Bridge) message(shard, seq string, sub int, h nats.Header, data []byte, arrival *time.Time) *outMsg {
	id := MsgID(b.opts.Stream, shard, seq, sub)
	h.Set(bus.MsgID, id)
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(subject.Raw),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"),
		semconv.MessagingMessageID(id),
		semconv.MessagingMessageBodySize(len(data)),
		semconv.AWSKinesisStreamName(b.opts.Stream),
		attrShard.String(shard),
		attrSequence.String(seq),
		attrPartition.String(h.Get(bus.KinesisPartition)),
	}
	if arrival != nil {
		attrs = append(attrs, attrArrival.String(arrival.UTC().Format(time.RFC3339Nano)),
			attrArrivalAge.Int64(max(time.Since(*arrival), 0).Milliseconds()))
	}
	ctx, span := b.tel.Tracer.Start(context.Background(), "send "+subject.Raw, trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	bus.Inject(ctx, h)
	m := &outMsg{msg: &nats.Msg{Subject: subject.Raw, Data: data, Header: h}, id: id, span: span}
	if size := msgSize(m.msg); size > b.maxPayload {
		return b.deadLetter(m, "too_large", fmt.Sprintf("record of %d bytes (with headers) exceeds the NATS max payload of %d bytes", size, b.maxPayload))
	}
	return m
}

// deadLetter turns m into its dead letter on gerritflow.dlq.bridge: the same
// Kinesis and trace headers, the reason, and the data truncated to what fits.
func (b *Bridge) deadLetter(m *outMsg, kind, reason string) *outMsg {
	h := nats.Header{}
	for k, v := range m.msg.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Set(bus.MsgID, "dlq.bridge."+m.id)
	h.Set(bus.Error, reason)
	h.Set(bus.Stage, "bridge")
	h.Set(bus.OriginSubject, subject.Raw)
	data := m.msg.Data
	dl := &nats.Msg{Subject: subject.DLQ("bridge"), Header: h}
	if room := b.maxPayload - msgSize(dl) - 64; len(data) > room {
		if room < 0 {
			room = 0
		}
		data = data[:room]
	}
	dl.Data = data
	m.span.SetAttributes(attribute.String("gerritflow.dlq.reason", reason))
	m.span.SetStatus(codes.Error, reason)
	b.m.dlq.WithLabelValues(kind).Inc()
	b.log.Error("dead-lettered", "shard", h.Get(bus.KinesisShard), "sequence", h.Get(bus.KinesisSequence),
		"msg_id", m.id, telemetry.KeyDecision, "dlq", telemetry.KeyReason, reason)
	return &outMsg{msg: dl, id: m.id, dlq: true, span: m.span}
}

// msgSize is the size NATS counts against max_payload: headers and data.
func msgSize(m *nats.Msg) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + len(m.Data)
}

// permanent reports a publish error that no retry can fix.
func permanent(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// send publishes m asynchronously within the in-flight window; a goroutine
// waits for its PubAck (retrying transient failures, dead-lettering permanent
// ones) and then acks record idx of s. It returns false if the bridge was
// killed while waiting for room in the window.
func (b *Bridge) send(s *shardRun, idx uint64, m *outMsg) bool {
	select {
	case b.sem <- struct{}{}:
	case <-s.hard.Done():
		m.span.End()
		return false
	}
	f, err := b.js.PublishMsgAsync(m.msg)
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		defer func() { <-b.sem }()
		if b.await(s, m, f, err) {
			s.acked(idx)
		}
	}()
	return true
}

// await waits for m's PubAck; a duplicate PubAck is success. It returns
// false only when the bridge was killed or the shard's lease was lost (then
// nobody will checkpoint past this record anyway).
func (b *Bridge) await(s *shardRun, m *outMsg, f jetstream.PubAckFuture, err error) bool {
	defer m.span.End()
	bo := newBackoff()
	for {
		if err == nil {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					b.m.duplicates.Inc()
				}
				if !m.dlq {
					b.m.msgsOut.Inc()
					b.m.bytesOut.Add(float64(len(m.msg.Data)))
				}
				return true
			case err = <-f.Err():
			case <-s.hard.Done():
				return false
			}
		}
		switch {
		case permanent(err) && m.dlq:
			m.span.RecordError(err)
			b.m.dlq.WithLabelValues("dlq_failed").Inc()
			b.log.Error("dead letter cannot be published either; the record is skipped", "msg_id", m.id, telemetry.KeyErr, err)
			return true // never stall the shard
		case permanent(err):
			m = b.deadLetter(m, "rejected", fmt.Sprintf("publish %s: %v", subject.Raw, err))
		default:
			b.m.publishRetries.Inc()
			if s.isLost() {
				return false
			}
			d := bo.NextBackOff()
			b.log.Warn("publish failed; retrying", "msg_id", m.id, telemetry.KeyErr, err, "in", d.String())
			if !sleep(s.hard, d) {
				return false
			}
		}
		f, err = b.js.PublishMsgAsync(m.msg)
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
