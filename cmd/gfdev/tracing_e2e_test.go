package main

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

// TestOneChangeIsOneTrace runs the five services with OTLP/HTTP export to a
// receiver in this test, uploads one change and waits for its vote. Then, the
// services stopped (which flushes their span batches), it checks what a
// search gerrit.change=<n> in Jaeger would show: one connected story from the
// bridge's span of the Kinesis record to the voter's review POST to Gerrit,
// through every service, with the Jenkins and Gerrit calls as client spans
// and no span lasting long.
func TestOneChangeIsOneTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	rcv := startOTLPReceiver(t)
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	s, err := stack.Start(ctx, stack.Options{
		Dir: filepath.Join(t.TempDir(), "dev"), Log: log, Shards: 1,
		ExtraConfig: fmt.Sprintf("otel: { endpoint: %q, protocol: http, insecure: true }\n", rcv.url),
	})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	stop := stopper(t, s)
	s.ScriptJenkins(300 * time.Millisecond)

	c, _ := uploadEvent(t, s, gerritsim.Upload{Project: "platform/core", Branch: "main", Subject: "Follow me in Jaeger"})
	if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	settle(t, s) // the vote's own comment-added event has gone through too
	stop()       // every service flushes its spans at shutdown

	spans := rcv.spans()
	change := strconv.Itoa(c)
	t.Logf("received %d spans in %d export requests", len(spans), rcv.requests())
	byID := map[string]*span{}
	for _, sp := range spans {
		byID[sp.spanID] = sp
		if d := sp.end.Sub(sp.start); d > 30*time.Second || d < 0 {
			t.Errorf("span %s lasted %v; want no span longer than 30s", sp, d)
		}
	}

	// The review POST of the vote (not of a "build started" message), walked
	// up by parent ids to the root of its trace.
	var review *span
	for _, sp := range spans {
		if sp.service == "gerritflow-voter" && sp.kind == tracepb.Span_SPAN_KIND_CLIENT &&
			strings.HasPrefix(sp.name, "gerrit POST ") && strings.HasSuffix(sp.name, "/review") && sp.attrs["gerrit.change"] == change &&
			byID[sp.parentID] != nil && byID[sp.parentID].name == "process ci.builds.completed" {
			if review != nil {
				t.Fatalf("two review POST spans for change %d: %s and %s", c, review, sp)
			}
			review = sp
		}
	}
	if review == nil {
		t.Fatalf("no client span of gerritflow-voter for the review POST of change %d among %d spans", c, len(spans))
	}
	var chain []*span
	for sp := review; sp != nil; {
		chain = append(chain, sp)
		if sp.parentID == "" {
			break
		}
		parent, ok := byID[sp.parentID]
		if !ok {
			t.Fatalf("the parent %s of %s was never exported: the story breaks there", sp.parentID, sp)
		}
		sp = parent
	}
	var story strings.Builder
	for i := len(chain) - 1; i >= 0; i-- {
		fmt.Fprintf(&story, "\n  %-18s %-11s %-60s %v", chain[i].service, kindName(chain[i].kind), chain[i].name, chain[i].end.Sub(chain[i].start).Round(time.Millisecond))
	}
	t.Logf("change %d, from the Kinesis record to the review:%s", c, story.String())

	root := chain[len(chain)-1]
	if root.service != "gerritflow-bridge" || root.name != "send gerrit.raw" || root.kind != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("the review's trace starts at %s; want the bridge's producer span send gerrit.raw", root)
	}
	if root.attrs["aws.kinesis.approximate_arrival_timestamp"] == "" || root.attrs["gerritflow.kinesis.arrival_age_ms"] == "" {
		t.Errorf("bridge span attributes %v lack the Kinesis arrival time", root.attrs)
	}
	want := []struct{ service, name string }{
		{"gerritflow-bridge", "send gerrit.raw"},
		{"gerritflow-parser", "process gerrit.raw"},
		{"gerritflow-parser", "send gerrit.events.patchset-created"},
		{"gerritflow-trigger", "process gerrit.events.patchset-created"},
		{"gerritflow-trigger", "send ci.builds.triggered"},
		{"gerritflow-monitor", "process ci.builds.triggered"},
		{"gerritflow-monitor", "send ci.builds.completed"},
		{"gerritflow-voter", "process ci.builds.completed"},
	}
	var got []struct{ service, name string }
	for i := len(chain) - 1; i > 0; i-- {
		got = append(got, struct{ service, name string }{chain[i].service, chain[i].name})
	}
	if !slices.Equal(got, want) {
		t.Errorf("the review's ancestors, root first:\n  %v\nwant\n  %v", got, want)
	}
	for _, sp := range chain {
		checkMessaging(t, sp)
		if sp != root && sp.attrs["gerrit.change"] != change { // the bridge cannot know the change; the parser is the first
			t.Errorf("span %s of the review's story lacks gerrit.change=%d (attributes %v)", sp, c, sp.attrs)
		}
	}

	// The story: every span reachable from the review by parent ids and links,
	// in either direction.
	storyIDs := connected(spans, byID, review)
	if testing.Verbose() {
		var all []*span
		for id := range storyIDs {
			all = append(all, byID[id])
		}
		slices.SortFunc(all, func(a, b *span) int { return a.start.Compare(b.start) })
		var b strings.Builder
		for _, sp := range all {
			fmt.Fprintf(&b, "\n  %s +%-6v %s links=%d %v", sp, sp.start.Sub(root.start).Round(time.Millisecond), sp.end.Sub(sp.start).Round(time.Millisecond), len(sp.links), sp.attrs)
		}
		t.Logf("the story of change %d (%d spans, by start time):%s", c, len(all), b.String())
	}
	inStory := func(pred func(*span) bool) *span {
		for id := range storyIDs {
			if sp := byID[id]; pred(sp) {
				return sp
			}
		}
		return nil
	}
	for _, svc := range []string{"bridge", "parser", "trigger", "monitor", "voter"} {
		if inStory(func(sp *span) bool { return sp.service == "gerritflow-"+svc }) == nil {
			t.Errorf("no span of gerritflow-%s in the story of change %d", svc, c)
		}
	}
	build := inStory(func(sp *span) bool {
		return sp.service == "gerritflow-trigger" && sp.kind == tracepb.Span_SPAN_KIND_CLIENT && strings.HasSuffix(sp.name, "/buildWithParameters")
	})
	if build == nil {
		t.Errorf("no Jenkins buildWithParameters client span of the trigger in the story")
	} else if build.attrs["gerrit.change"] != change || build.attrs["ci.job"] == "" || build.attrs["ci.buildset"] == "" {
		t.Errorf("buildWithParameters span %s attributes %v; want gerrit.change=%d, ci.job and ci.buildset", build, build.attrs, c)
	}
	poll := inStory(func(sp *span) bool { return sp.service == "gerritflow-monitor" && strings.HasPrefix(sp.name, "poll ") })
	if poll == nil {
		t.Errorf("no monitor poll span in the story")
	} else if poll.attrs["gerrit.change"] != change || poll.attrs["ci.job"] == "" {
		t.Errorf("poll span %s attributes %v; want gerrit.change=%d and ci.job", poll, poll.attrs, c)
	}
	if inStory(func(sp *span) bool {
		return sp.service == "gerritflow-monitor" && sp.kind == tracepb.Span_SPAN_KIND_CLIENT && strings.HasPrefix(sp.name, "jenkins GET ") &&
			sp.attrs["gerrit.change"] == change && sp.attrs["ci.job"] != ""
	}) == nil {
		t.Errorf("no Jenkins GET client span of the monitor with gerrit.change=%d and ci.job in the story", c)
	}
	// The voter's fan-in links its inputs: the build set's event and each build.
	voterSpan := chain[1]
	if len(voterSpan.links) < 3 {
		t.Errorf("voter span %s has %d links; want one to the build set's event and one per build (3)", voterSpan, len(voterSpan.links))
	}
	for _, l := range voterSpan.links {
		if target, ok := byID[l.spanID]; !ok || l.traceID != root.traceID {
			t.Errorf("voter link to %s/%s: exported %v, same trace %v; want a span of the story", l.traceID, l.spanID, ok, l.traceID == root.traceID)
		} else if target.service != "gerritflow-trigger" {
			t.Errorf("voter link to %s; want the trigger's span that started a build or the build set", target)
		}
	}

	// Every span that names the change names its patch set and project, and
	// belongs to the story of one Gerrit event of the change, rooted at the
	// bridge's span of its Kinesis record.
	roots := map[string]bool{}
	for _, sp := range spans {
		if sp.attrs["gerrit.change"] != change {
			continue
		}
		if sp.attrs["gerrit.patchset"] != "1" || sp.attrs["gerrit.project"] != "platform/core" {
			t.Errorf("span %s names change %d with patch set %q, project %q; want 1, platform/core", sp, c, sp.attrs["gerrit.patchset"], sp.attrs["gerrit.project"])
		}
		if sp.kind == tracepb.Span_SPAN_KIND_PRODUCER || sp.kind == tracepb.Span_SPAN_KIND_CONSUMER {
			checkMessaging(t, sp)
		}
		top := sp
		for top.parentID != "" && byID[top.parentID] != nil {
			top = byID[top.parentID]
		}
		if top.parentID != "" || top.service != "gerritflow-bridge" {
			t.Errorf("span %s of change %d leads up to %s; want the bridge's span of a Kinesis record", sp, c, top)
			continue
		}
		roots[top.spanID] = true
	}
	if !roots[root.spanID] {
		t.Errorf("the review's story is not among the traces of change %d", c)
	}
	// The upload's event, and the comment-added Gerrit sends for the vote.
	if len(roots) > 2 {
		t.Errorf("change %d has %d traces; want 2 (its upload, the comment of its vote)", c, len(roots))
	}
	seen := map[string]bool{}
	for _, sp := range spans {
		seen[sp.service] = true
	}
	for _, svc := range stack.Services {
		if !seen["gerritflow-"+svc] {
			t.Errorf("gerritflow-%s exported no span", svc)
		}
	}
}

// checkMessaging checks the messaging semantic-convention attributes of a
// producer or consumer span.
func checkMessaging(t *testing.T, sp *span) {
	t.Helper()
	var op string
	switch sp.kind {
	case tracepb.Span_SPAN_KIND_PRODUCER:
		op = "send"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		op = "process"
		if sp.attrs["messaging.consumer.group.name"] == "" {
			t.Errorf("consumer span %s has no messaging.consumer.group.name", sp)
		}
	default:
		return
	}
	a := sp.attrs
	if a["messaging.system"] != "nats" || a["messaging.operation.type"] != op || a["messaging.operation.name"] != op ||
		a["messaging.destination.name"] == "" || a["messaging.message.id"] == "" || sp.name != op+" "+a["messaging.destination.name"] {
		t.Errorf("span %s messaging attributes %v; want system nats, operation %s, destination and message id", sp, a, op)
	}
}

// connected returns the ids of the spans connected to from by parent ids
// and links, in either direction.
func connected(spans []*span, byID map[string]*span, from *span) map[string]bool {
	edges := map[string][]string{}
	for _, sp := range spans {
		if sp.parentID != "" {
			edges[sp.spanID] = append(edges[sp.spanID], sp.parentID)
			edges[sp.parentID] = append(edges[sp.parentID], sp.spanID)
		}
		for _, l := range sp.links {
			edges[sp.spanID] = append(edges[sp.spanID], l.spanID)
			edges[l.spanID] = append(edges[l.spanID], sp.spanID)
		}
	}
	seen := map[string]bool{from.spanID: true}
	queue := []string{from.spanID}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		for _, next := range edges[id] {
			if !seen[next] && byID[next] != nil {
				seen[next] = true
				queue = append(queue, next)
			}
		}
	}
	return seen
}

// span is an exported span, reduced to what the test looks at.
type span struct {
	service, name             string
	kind                      tracepb.Span_SpanKind
	traceID, spanID, parentID string
	start, end                time.Time
	attrs                     map[string]string
	links                     []spanRef
	status                    tracepb.Status_StatusCode
	events                    []string // names, e.g. "exception"
}

type spanRef struct{ traceID, spanID string }

func (s *span) String() string {
	return fmt.Sprintf("%s %q (%s)", s.service, s.name, kindName(s.kind))
}

func kindName(k tracepb.Span_SpanKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "SPAN_KIND_"))
}

// otlpReceiver is the trace half of an OTLP/HTTP collector: it accepts
// POST /v1/traces with a protobuf ExportTraceServiceRequest.
type otlpReceiver struct {
	url string
	mu  sync.Mutex
	all []*span
	raw [][]byte // every export request, decompressed protobuf
	n   int
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{url: "http://" + ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		data, err := io.ReadAll(body)
		var export coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(data, &export)
		}
		if err != nil || req.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP receiver: bad export request (%s): %v", req.Header.Get("Content-Type"), err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.add(&export, data)
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(resp)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

// add keeps the spans of an export request, and the request's bytes.
func (r *otlpReceiver) add(req *coltracepb.ExportTraceServiceRequest, raw []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.raw = append(r.raw, raw)
	for _, rs := range req.GetResourceSpans() {
		service := attrMap(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := &span{
					service: service, name: s.GetName(), kind: s.GetKind(),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					start: time.Unix(0, int64(s.GetStartTimeUnixNano())), end: time.Unix(0, int64(s.GetEndTimeUnixNano())),
					attrs: attrMap(s.GetAttributes()), status: s.GetStatus().GetCode(),
				}
				for _, e := range s.GetEvents() {
					sp.events = append(sp.events, e.GetName())
				}
				if len(s.GetParentSpanId()) > 0 {
					sp.parentID = hex.EncodeToString(s.GetParentSpanId())
				}
				for _, l := range s.GetLinks() {
					sp.links = append(sp.links, spanRef{hex.EncodeToString(l.GetTraceId()), hex.EncodeToString(l.GetSpanId())})
				}
				r.all = append(r.all, sp)
			}
		}
	}
}

func (r *otlpReceiver) spans() []*span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*span(nil), r.all...)
}

// rawRequests returns every export request received, as protobuf bytes:
// protobuf stores strings verbatim, so a substring search over them covers
// span names, attributes, events, status messages, links and resources.
func (r *otlpReceiver) rawRequests() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.raw...)
}

func (r *otlpReceiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.GetStringValue()
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = strconv.FormatBool(v.GetBoolValue())
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = strconv.FormatFloat(v.GetDoubleValue(), 'g', -1, 64)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// stopper returns the stop of s, run at most once: by the test, when it needs
// every process flushed and ended, or at cleanup.
func stopper(t *testing.T, s *stack.Stack) func() {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := s.Stop(); err != nil {
				t.Errorf("stack did not stop cleanly: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
