// Package bus connects to NATS and names the headers every gerritflow message
// carries. Its Carrier moves W3C trace context through nats.Header with the
// lowercase keys the wire needs.
package bus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/streams"
)

// Header names.
const (
	MsgID            = nats.MsgIdHdr // "Nats-Msg-Id"
	Traceparent      = "traceparent"
	Tracestate       = "tracestate"
	GerritChange     = "Gerrit-Change"
	GerritPatchset   = "Gerrit-Patchset"
	GerritProject    = "Gerrit-Project"
	GerritEventType  = "Gerrit-Event-Type"
	KinesisStream    = "Kinesis-Stream"
	KinesisShard     = "Kinesis-Shard"
	KinesisSequence  = "Kinesis-Sequence"
	KinesisPartition = "Kinesis-Partition-Key"
	KinesisArrival   = "Kinesis-Arrival"
	Replay           = "Gerritflow-Replay"
	ReplayOf         = "Gerritflow-Replay-Of"
	Error            = "Gerritflow-Error"
	Stage            = "Gerritflow-Stage"
	OriginSubject    = "Gerritflow-Origin-Subject"
	OriginSequence   = "Gerritflow-Origin-Sequence"
	OriginDelivered  = "Gerritflow-Origin-Delivered"
	BuildSet         = "Ci-Buildset"
	Job              = "Ci-Job"
)

// Carrier adapts nats.Header to OpenTelemetry's TextMapCarrier without
// changing the case of keys (propagation.HeaderCarrier would write "Traceparent",
// which nats.Header.Get and non-Go peers do not find).
type Carrier nats.Header

var _ propagation.TextMapCarrier = Carrier(nil)

// Get returns the first value of key, matched exactly, then case-insensitively.
func (c Carrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set stores key exactly as given.
func (c Carrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys present.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Propagator is the W3C trace-context and baggage propagator every service uses.
var Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Inject writes ctx's trace context into h.
func Inject(ctx context.Context, h nats.Header) { Propagator.Inject(ctx, Carrier(h)) }

// Extract returns ctx carrying the trace context found in h.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return Propagator.Extract(ctx, Carrier(h))
}

// SetChange sets the Gerrit-* headers (those with a value).
func SetChange(h nats.Header, project string, change, patchset int) {
	if project != "" {
		h.Set(GerritProject, project)
	}
	if change > 0 {
		h.Set(GerritChange, strconv.Itoa(change))
	}
	if patchset > 0 {
		h.Set(GerritPatchset, strconv.Itoa(patchset))
	}
}

// Connect dials NATS as client name and returns a JetStream handle, logged in
// with the .creds file or the user and password c names (the password read
// from its environment variable or file). Replies come to the user's own
// inbox prefix (config.NATS.Inbox: _INBOX_<user>), which is all the server
// lets a gerritflow user subscribe to. Reconnects are unlimited: a broker
// restart must not end a service.
func Connect(ctx context.Context, c config.NATS, name string) (jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name("gerritflow-" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	user, password, err := c.UserPassword(os.Getenv)
	if err != nil {
		return nil, err
	}
	if user != "" {
		opts = append(opts, nats.UserInfo(user, password.Reveal()))
	}
	inbox, err := c.Inbox(user, os.Getenv)
	if err != nil {
		return nil, err
	}
	if inbox != config.DefaultInbox {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" || c.KeyFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(deadline)))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redactURL(c.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// LogEvents logs, as JSON lines of log, what the connection otherwise keeps
// to itself: a lost connection, a reconnect, the final close, and the
// server's asynchronous errors (permission violations, slow consumer).
// Without it nats.go prints asynchronous errors as plain text on stderr.
func LogEvents(nc *nats.Conn, log *slog.Logger) {
	nc.SetDisconnectErrHandler(func(nc *nats.Conn, err error) {
		if err != nil {
			log.Warn("nats disconnected", "err", err.Error())
		}
	})
	nc.SetReconnectHandler(func(nc *nats.Conn) {
		log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "reconnects", nc.Stats().Reconnects)
	})
	nc.SetClosedHandler(func(nc *nats.Conn) {
		if err := nc.LastError(); err != nil {
			log.Warn("nats connection closed", "err", err.Error())
		}
	})
	nc.SetErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		args := []any{"err", err.Error()}
		if sub != nil {
			args = append(args, "subscription", sub.Subject)
		}
		log.Error("nats error", args...)
	})
}

// redactURL drops user information from a NATS URL before it is printed.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if s := strings.Index(p, "://"); s >= 0 && s < at {
				parts[i] = p[:s+3] + "REDACTED@" + p[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// Healthy returns a readiness check that fails while the connection is down.
func Healthy(js jetstream.JetStream) func(context.Context) error {
	return func(context.Context) error {
		if s := js.Conn().Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats %s", s)
		}
		return nil
	}
}

// Ready returns the readiness check of a service (telemetry's /readyz): NATS
// is connected, and every stream, durable consumer and bucket the service
// binds to exists (streams.Check, which names what is missing).
func Ready(js jetstream.JetStream, need streams.Need) func(context.Context) error {
	healthy := Healthy(js)
	return func(ctx context.Context) error {
		if err := healthy(ctx); err != nil {
			return err
		}
		return streams.Check(ctx, js, need)
	}
}
