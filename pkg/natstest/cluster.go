package natstest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded nats-servers on loopback, each
// with its own file store, routed to every other one as a production cluster
// is (deploy/nats/nats-cluster.conf).
type Cluster struct {
	Servers []*server.Server
}

// StartCluster starts n servers (n ≥ 3 for R3 streams), waits until they see
// each other and a JetStream meta leader is elected, and shuts them down at
// cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// Route ports must be known before the first server starts: every server
	// lists every route, as the deployment's configuration does.
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	store := t.TempDir()
	c := &Cluster{}
	t.Cleanup(c.shutdown)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("n%d", i+1)
		s, err := server.NewServer(&server.Options{
			ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT,
			JetStream: true, StoreDir: filepath.Join(store, name),
			Cluster: server.ClusterOpts{Name: "gerritflow-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  routes,
			NoLog:   true, NoSigs: true,
		})
		if err != nil {
			t.Fatalf("natstest: server %s: %v", name, err)
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		if !s.ReadyForConnections(15 * time.Second) {
			t.Fatalf("natstest: server %s not ready after 15s", s.Name())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := true
		for _, s := range c.Servers {
			if s.NumRoutes() < n-1 || s.JetStreamIsClustered() && !s.JetStreamIsCurrent() {
				ready = false
			}
		}
		if ready && c.metaLeader() != nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: cluster of %d not formed after 30s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) metaLeader() *server.Server {
	for _, s := range c.Servers {
		if s.JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// URLs is every server's client URL, comma-separated (nats.url of a config).
func (c *Cluster) URLs() string {
	var urls []string
	for _, s := range c.Servers {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

func (c *Cluster) shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
	for _, s := range c.Servers {
		s.WaitForShutdown()
	}
}
