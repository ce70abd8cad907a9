package jenkinssim_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// TestTruncatedBuildRequestQueuesNothing: a client killed while it sends
// buildWithParameters leaves a body shorter than its Content-Length. Jenkins
// (Jetty) refuses it; the simulator used to queue a build with every
// parameter empty (found by `make chaos`, docs/reliability.md).
func TestTruncatedBuildRequestQueuesNothing(t *testing.T) {
	s := jenkinssim.Start(t)
	s.AddJob("unit", "GERRITFLOW_BUILD_ID")
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := "GERRITFLOW_BUILD_ID=abc"
	fmt.Fprintf(conn, "POST /job/unit/buildWithParameters HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
		"Basic "+basic(s.User(), s.Token()), len(body)+40, body)
	conn.(*net.TCPConn).CloseWrite() // the rest of the body never comes
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("truncated request answered %s; want an error", resp.Status)
		}
	}
	conn.Close()
	time.Sleep(100 * time.Millisecond)
	if n := s.BuildRequests("unit"); n != 0 {
		t.Errorf("%d builds queued from a truncated request (queued %v); want none", n, s.Queued("unit"))
	}
}
