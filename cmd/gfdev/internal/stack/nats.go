package stack

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// newNATS starts an embedded nats-server with JetStream on the stack's file
// store, listening on port (server.RANDOM_PORT: any free one).
func (s *Stack) newNATS(port int) (*server.Server, error) {
	so := &server.Options{
		ServerName: "gfdev", Host: "127.0.0.1", Port: port,
		JetStream: true, StoreDir: filepath.Join(s.opts.Dir, "nats"),
		NoLog: true, NoSigs: true,
	}
	if s.opts.NATSOptions != nil {
		s.opts.NATSOptions(so)
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats-server not ready after 15s")
	}
	return ns, nil
}

// RestartNATS shuts the embedded nats-server down, waits down, and starts a
// new server on the same port with the same file store, as a broker restart
// in production does: every stream, consumer and KV bucket comes back from
// disk, and every client (the services, the stack's own NC) reconnects by
// itself. It is not safe to call concurrently with Stop.
func (s *Stack) RestartNATS(down time.Duration) error {
	old := s.NATS
	port := old.Addr().(*net.TCPAddr).Port
	old.Shutdown()
	old.WaitForShutdown()
	time.Sleep(down)
	// The port may linger for a moment after shutdown: retry briefly.
	var err error
	for i := 0; i < 20; i++ {
		var ns *server.Server
		if ns, err = s.newNATS(port); err == nil {
			s.NATS = ns
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("restart nats-server on port %d: %w", port, err)
}
