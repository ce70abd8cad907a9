package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAttemptRetriesWhatWaitingCures: a request that got no answer, or a 503
// from a cluster electing a leader, is sent again; an error that waiting does
// not cure (too many replicas for the cluster) ends at once; each attempt
// has its own deadline, shorter than the caller's.
func TestAttemptRetriesWhatWaitingCures(t *testing.T) {
	defer func(d time.Duration) { AttemptTimeout = d }(AttemptTimeout)
	AttemptTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	replicas := &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}

	calls := 0
	err := attempt(ctx, func(actx context.Context) error {
		calls++
		switch calls {
		case 1: // unanswered: the attempt's own deadline ends it
			<-actx.Done()
			return fmt.Errorf("create consumer: %w", actx.Err())
		case 2:
			return nats.ErrNoResponders
		case 3:
			return unavailable
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("attempt = %v after %d calls; want success on the 4th", err, calls)
	}

	calls = 0
	err = attempt(ctx, func(context.Context) error { calls++; return replicas })
	if !errors.Is(err, replicas) || calls != 1 {
		t.Errorf("attempt = %v after %d calls; want the replicas error after one call", err, calls)
	}

	calls = 0
	notEnabled := jetstream.ErrJetStreamNotEnabled
	err = attempt(ctx, func(context.Context) error { calls++; return notEnabled })
	if !errors.Is(err, notEnabled) || calls != 1 {
		t.Errorf("attempt = %v after %d calls; want 'jetstream not enabled' after one call", err, calls)
	}

	// The caller's deadline ends the retries and names the last failure.
	short, cancelShort := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancelShort()
	calls = 0
	err = attempt(short, func(context.Context) error { calls++; return unavailable })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(fmt.Sprint(err), "temporarily unavailable") || calls < 2 {
		t.Errorf("attempt under a short deadline = %v after %d calls; want the deadline and the last 503, after retries", err, calls)
	}
}
