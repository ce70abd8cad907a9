// Package streams holds the JetStream streams, durable consumers and KV buckets
// gerritflow needs, as the JSON that `nats stream add --config`, `nats consumer
// add --config` and the server API read (durations in nanoseconds).
//
// Provisioning is one idempotent step run with admin rights (gfctl provision,
// make dev, tests). Services only Check that what they bind to exists, so that
// in production each service's NATS user can be least-privilege.
package streams

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

//go:embed *.json consumers/*.json kv/*.json
var files embed.FS

// Names of the streams.
const (
	GerritRaw    = "GERRIT_RAW"
	GerritEvents = "GERRIT_EVENTS"
	CIBuilds     = "CI_BUILDS"
	CIVotes      = "CI_VOTES"
	DLQ          = "GERRITFLOW_DLQ"
)

// Names of the KV buckets.
const (
	BucketLeases      = "kinesis_leases"
	BucketCheckpoints = "kinesis_checkpoints"
	BucketChanges     = "changes"
	BucketBuildSets   = "buildsets"
	BucketBuilds      = "builds"
	BucketVotes       = "votes"
)

// Consumer is a durable consumer definition and the stream it reads.
type Consumer struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// Set is every definition, decoded.
type Set struct {
	Streams   []jetstream.StreamConfig
	Consumers []Consumer
	Buckets   []jetstream.KeyValueConfig
}

// Load decodes the embedded definitions, rejecting unknown fields.
func Load() (*Set, error) {
	var s Set
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		switch dir, name := path.Split(p); dir {
		case "":
			var c jetstream.StreamConfig
			if err := decode(data, &c); err != nil {
				return fmt.Errorf("stream %s: %w", p, err)
			}
			s.Streams = append(s.Streams, c)
		case "consumers/":
			stream, _, ok := strings.Cut(strings.TrimSuffix(name, ".json"), ".")
			if !ok {
				return fmt.Errorf("consumer %s: name it <STREAM>.<durable>.json", p)
			}
			var c jetstream.ConsumerConfig
			if err := decode(data, &c); err != nil {
				return fmt.Errorf("consumer %s: %w", p, err)
			}
			s.Consumers = append(s.Consumers, Consumer{Stream: stream, Config: c})
		case "kv/":
			var c jetstream.KeyValueConfig
			if err := decode(data, &c); err != nil {
				return fmt.Errorf("kv %s: %w", p, err)
			}
			if c.RePublish != nil || c.Mirror != nil || len(c.Sources) > 0 || c.LimitMarkerTTL != 0 {
				return fmt.Errorf("kv %s: republish, mirror, sources and limit_marker_ttl are not provisioned (see BucketStream)", p)
			}
			s.Buckets = append(s.Buckets, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// ConsumerFor returns the durable consumer definition named durable.
func (s *Set) ConsumerFor(durable string) (Consumer, bool) {
	for _, c := range s.Consumers {
		if c.Config.Durable == durable {
			return c, true
		}
	}
	return Consumer{}, false
}

// Provision creates or updates every stream, durable consumer and bucket.
// Running it twice changes nothing.
func Provision(ctx context.Context, js jetstream.JetStream) error {
	return ProvisionReplicas(ctx, js, 0)
}

// ProvisionReplicas is Provision with every stream and bucket at replicas
// copies (R3 in a cluster); 0 keeps the definitions' own (1).
//
// A bucket with more than one replica is provisioned without direct gets
// (allow_direct: false). Direct gets are answered by any replica, followers
// included, and a follower may not have applied the latest write yet; the
// voter decides a build set's vote by reading its other builds' records, the
// trigger and monitor read before they compare-and-set. Without direct gets
// every KV read goes to the stream leader ($JS.API.STREAM.MSG.GET) and sees
// every write acknowledged before it. Services decide how to read when they
// bind, so they must restart after a bucket's replica count changes
// (docs/deploy.md).
func ProvisionReplicas(ctx context.Context, js jetstream.JetStream, replicas int) error {
	s, err := Load()
	if err != nil {
		return err
	}
	if replicas > 0 {
		for i := range s.Streams {
			s.Streams[i].Replicas = replicas
		}
		for i := range s.Buckets {
			s.Buckets[i].Replicas = replicas
		}
	}
	for _, c := range s.Streams {
		if err := attempt(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, c)
			return err
		}); err != nil {
			return fmt.Errorf("provision stream %s: %w", c.Name, err)
		}
	}
	for _, c := range s.Consumers {
		if err := attempt(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, c.Stream, c.Config)
			return err
		}); err != nil {
			return fmt.Errorf("provision consumer %s on %s: %w", c.Config.Durable, c.Stream, err)
		}
	}
	for _, c := range s.Buckets {
		// Not js.CreateOrUpdateKeyValue: it always turns direct gets on.
		if err := attempt(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, BucketStream(c))
			return err
		}); err != nil {
			return fmt.Errorf("provision kv %s: %w", c.Bucket, err)
		}
	}
	return nil
}

// AttemptTimeout bounds one JetStream API request of Provision.
var AttemptTimeout = 10 * time.Second

// attempt runs one idempotent JetStream API request (create or update) with
// its own AttemptTimeout, again with backoff while the answer says "try
// later", until ctx ends. In a cluster a request can go unanswered or be
// refused with 503 while a new stream elects its leader, or while the meta
// leader moves (seen on a loaded 2-core machine: a consumer creation right
// after its R3 stream's creation got no answer at all). Every other error is
// final at once: a stream with more replicas than servers does not become
// possible by waiting.
func attempt(ctx context.Context, request func(context.Context) error) error {
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		defer cancel()
		err := request(actx)
		if err == nil {
			return struct{}{}, nil
		}
		last = err
		if ctx.Err() == nil && retryable(err) {
			return struct{}{}, err
		}
		return struct{}{}, backoff.Permanent(err)
	}, backoff.WithBackOff(&backoff.ExponentialBackOff{
		InitialInterval: 250 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: 5 * time.Second,
	}), backoff.WithMaxElapsedTime(0))
	if err != nil && last != nil && !errors.Is(err, last) {
		// ctx ended between attempts: say what the last attempt met.
		return fmt.Errorf("%w (last attempt: %v)", err, last)
	}
	return err
}

// retryable reports whether a JetStream API error is one that waiting can cure.
func retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == 503 && api.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled
}

// BucketStream is the stream that holds bucket c: the configuration nats.go's
// CreateKeyValue gives it (TestBucketStreamIsWhatNATSGoCreates holds the two
// together for every field the definitions use), except that direct gets are
// on only for a single replica (see ProvisionReplicas).
func BucketStream(c jetstream.KeyValueConfig) jetstream.StreamConfig {
	history := int64(max(c.History, 1))
	replicas := max(c.Replicas, 1)
	dup := 2 * time.Minute
	if c.TTL > 0 && c.TTL < dup {
		dup = c.TTL
	}
	orUnlimited := func(v int64) int64 {
		if v == 0 {
			return -1
		}
		return v
	}
	var compression jetstream.StoreCompression
	if c.Compression {
		compression = jetstream.S2Compression
	}
	return jetstream.StreamConfig{
		Name:              "KV_" + c.Bucket,
		Description:       c.Description,
		Subjects:          []string{"$KV." + c.Bucket + ".>"},
		MaxMsgsPerSubject: history,
		MaxBytes:          orUnlimited(c.MaxBytes),
		MaxAge:            c.TTL,
		MaxMsgSize:        int32(orUnlimited(int64(c.MaxValueSize))),
		Storage:           c.Storage,
		Replicas:          replicas,
		Placement:         c.Placement,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        dup,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       replicas == 1,
		Compression:       compression,
		Discard:           jetstream.DiscardNew,
		Metadata:          c.Metadata,
	}
}

// Need names what one service binds to.
type Need struct {
	Streams   []string
	Consumers []string // durable names
	Buckets   []string
}

// Check reports, in one error, every stream, consumer or bucket of need that
// does not exist. Services call it at start instead of creating anything.
func Check(ctx context.Context, js jetstream.JetStream, need Need) error {
	s, err := Load()
	if err != nil {
		return err
	}
	var missing []string
	for _, name := range need.Streams {
		if _, err := js.Stream(ctx, name); err != nil {
			missing = append(missing, fmt.Sprintf("stream %s (%v)", name, err))
		}
	}
	for _, durable := range need.Consumers {
		c, ok := s.ConsumerFor(durable)
		if !ok {
			missing = append(missing, fmt.Sprintf("consumer %s (no definition in streams/consumers)", durable))
			continue
		}
		if _, err := js.Consumer(ctx, c.Stream, durable); err != nil {
			missing = append(missing, fmt.Sprintf("consumer %s on %s (%v)", durable, c.Stream, err))
		}
	}
	for _, b := range need.Buckets {
		if _, err := js.KeyValue(ctx, b); err != nil {
			missing = append(missing, fmt.Sprintf("kv %s (%v)", b, err))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("not provisioned (run gfctl provision): %w", errors.New(strings.Join(missing, "; ")))
	}
	return nil
}
