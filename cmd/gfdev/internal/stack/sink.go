package stack

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

// sinkStats counts what the stand-in for the events-aws-kinesis plugin did.
type sinkStats struct {
	retries, failures atomic.Int64
}

// kinesisSink writes every Gerrit event into the Kinesis stream, one record
// per event, as the events-aws-kinesis plugin does. A failed PutRecord is
// retried for up to 30 seconds (the plugin's own publisher retries too); only
// then is the event given up, counted and logged: gerritflow never saw it.
func (s *Stack) kinesisSink(ctx context.Context) func(eventType string, data []byte) {
	return func(eventType string, data []byte) {
		deadline := time.Now().Add(30 * time.Second)
		wait := 50 * time.Millisecond
		for {
			_, _, err := gerritsim.PutEvent(ctx, s.Kinesis.Client(), KinesisStream, eventType, data)
			if err == nil {
				return
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				s.sink.failures.Add(1)
				s.logf("kinesis put: giving up on a %s event: %v", eventType, err)
				return
			}
			s.sink.retries.Add(1)
			time.Sleep(wait)
			wait = min(2*wait, time.Second)
		}
	}
}

// SinkFailures is the number of Gerrit events that never reached Kinesis
// (PutRecord failed for 30 seconds), and SinkRetries the PutRecord calls
// that were retried.
func (s *Stack) SinkFailures() int64 { return s.sink.failures.Load() }

// SinkRetries is the number of PutRecord calls retried by the Kinesis sink.
func (s *Stack) SinkRetries() int64 { return s.sink.retries.Load() }
