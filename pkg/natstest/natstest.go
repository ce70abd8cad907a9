// Package natstest runs a real nats-server with JetStream inside a test.
package natstest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/streams"
)

// Server is an embedded nats-server that can be restarted on the same port
// and with the same store.
type Server struct {
	t    testing.TB
	opts server.Options
	*server.Server
}

// Start runs a JetStream server on a random loopback port with a file store
// in t.TempDir(); it is shut down at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true,
	}}
	s.start()
	// Keep the port the server got, so Restart comes back where clients reconnect.
	s.opts.Port = s.Server.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("natstest: server not ready after 10s")
	}
	s.Server = srv
}

func (s *Server) stop() {
	if s.Server != nil {
		s.Server.Shutdown()
		s.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port and store,
// as a broker restart in production does.
func (s *Server) Restart() {
	s.t.Helper()
	s.stop()
	s.start()
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.Server.ClientURL() }

// Connect opens a client connection closed at cleanup.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// JetStream starts a server, provisions every stream, consumer and bucket of
// gerritflow, and returns a connected JetStream handle.
func JetStream(t testing.TB) (*Server, jetstream.JetStream) {
	t.Helper()
	s := Start(t)
	_, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Provision(ctx, js); err != nil {
		t.Fatalf("natstest: provision: %v", err)
	}
	return s, js
}

// Collect reads n messages published on subject (from the start of the
// stream that holds it) within timeout, failing the test when fewer arrive.
func Collect(t testing.TB, js jetstream.JetStream, subject string, n int, timeout time.Duration) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatalf("natstest: stream of %s: %v", subject, err)
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatalf("natstest: consumer on %s: %v", subject, err)
	}
	// Batches, not Next: one round trip per message read three thousand in
	// twenty seconds on a loaded CI machine with the race detector.
	deadline := time.Now().Add(timeout)
	var got []jetstream.Msg
	for len(got) < n {
		wait := time.Until(deadline)
		if wait <= 0 {
			t.Fatalf("natstest: got %d of %d messages on %s within %v", len(got), n, subject, timeout)
		}
		batch, err := cons.Fetch(min(n-len(got), 1000), jetstream.FetchMaxWait(min(wait, 2*time.Second)))
		if err != nil {
			t.Fatalf("natstest: got %d of %d messages on %s: %v", len(got), n, subject, err)
		}
		for m := range batch.Messages() {
			got = append(got, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("natstest: got %d of %d messages on %s: %v", len(got), n, subject, err)
		}
	}
	return got
}

// Count returns how many messages subject holds now.
func Count(t testing.TB, js jetstream.JetStream, subject string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, subject)
	if err != nil {
		t.Fatalf("natstest: stream of %s: %v", subject, err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", name, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("natstest: info %s: %v", name, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return int(n)
}
