package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/gerritflow/gerritflow/pkg/config"
)

func TestServerMetricsHealthReady(t *testing.T) {
	tel, err := Start(context.Background(), "voter", config.Otel{}, "127.0.0.1:0", WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	a := tel.Counter("votes_total", "votes", "outcome")
	b := tel.Counter("votes_total", "votes", "outcome") // a second handler in one process
	a.WithLabelValues("posted").Inc()
	b.WithLabelValues("posted").Inc()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + tel.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Ready = %d; want 503", code)
	}
	tel.Ready()
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after Ready = %d; want 200", code)
	}
	tel.AddReadyCheck(func(context.Context) error { return io.ErrUnexpectedEOF })
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unexpected EOF") {
		t.Errorf("/readyz with a failing check = %d %q; want 503 naming the cause", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	_, metrics := get("/metrics")
	if !strings.Contains(metrics, `gerritflow_voter_votes_total{outcome="posted"} 2`) {
		t.Errorf("/metrics lacks the shared counter at 2:\n%s", metrics)
	}
}

func TestLogLinesAreJSONWithTraceID(t *testing.T) {
	var buf bytes.Buffer
	tel, err := Start(context.Background(), "parser", config.Otel{}, "", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tel.Tracer.Start(context.Background(), "x")
	tel.Logger.InfoContext(ctx, "decision", KeyDecision, "skip", KeyChange, 12)
	span.End()
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line is not JSON: %q", buf.String())
	}
	want := trace.SpanContextFromContext(ctx).TraceID().String()
	if line["service"] != "parser" || line[KeyTraceID] != want || line[KeyDecision] != "skip" {
		t.Errorf("log line = %v; want service parser, trace_id %s, decision skip", line, want)
	}
}

func TestHTTPClientSpansCarryCallerAttrsAndAreMeasured(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := Start(context.Background(), "trigger", config.Otel{}, "", WithLogOutput(io.Discard), WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Traceparent") == "" {
			t.Errorf("%s %s: no trace context in the request headers", r.Method, r.URL)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	hc := tel.HTTPClient("jenkins", 5*time.Second)

	ctx, caller := tel.Tracer.Start(context.Background(), "start unit",
		trace.WithAttributes(AttrChange.Int(1234), AttrPatchset.Int(2), AttrProject.String("platform/core"),
			AttrJob.String("unit"), attribute.String("not.inherited", "x")))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/job/unit/buildWithParameters", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	caller.End()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	if _, err := hc.Get(dead.URL + "/queue/item/1/api/json"); err == nil {
		t.Fatal("GET of a closed server succeeded")
	}

	var client tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.Name == "jenkins POST /job/unit/buildWithParameters" {
			client = s
		}
	}
	if client.Name == "" {
		t.Fatalf("no client span named %q among %v", "jenkins POST /job/unit/buildWithParameters", spanNames(spans))
	}
	attrs := map[attribute.Key]string{}
	for _, a := range client.Attributes {
		attrs[a.Key] = a.Value.Emit()
	}
	for k, want := range map[attribute.Key]string{AttrChange: "1234", AttrPatchset: "2", AttrProject: "platform/core", AttrJob: "unit",
		"service.peer.name": "jenkins", "http.response.status_code": "201"} {
		if attrs[k] != want {
			t.Errorf("client span %s = %q; want %q (attributes %v)", k, attrs[k], want, attrs)
		}
	}
	if _, ok := attrs["not.inherited"]; ok {
		t.Errorf("client span took over an attribute that names no change or job: %v", attrs)
	}
	if client.SpanKind != trace.SpanKindClient || client.Parent.SpanID() != caller.SpanContext().SpanID() {
		t.Errorf("client span kind %v parent %v; want a client span, child of the caller's span %v", client.SpanKind, client.Parent.SpanID(), caller.SpanContext().SpanID())
	}

	counts := histogramCounts(t, tel, "gerritflow_trigger_http_client_seconds")
	for _, want := range []string{"code=201,method=POST,peer=jenkins", "code=error,method=GET,peer=jenkins"} {
		if counts[want] != 1 {
			t.Errorf("http_client_seconds{%s} count = %d; want 1 (have %v)", want, counts[want], counts)
		}
	}
}

func spanNames(e *tracetest.InMemoryExporter) []string {
	var names []string
	for _, s := range e.GetSpans() {
		names = append(names, s.Name)
	}
	return names
}

// histogramCounts returns the sample count of every series of the histogram
// name, by its labels written name=value,... in name order.
func histogramCounts(t *testing.T, tel *Telemetry, name string) map[string]uint64 {
	t.Helper()
	mfs, err := tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			counts[strings.Join(labels, ",")] = m.GetHistogram().GetSampleCount()
		}
	}
	return counts
}

// TestOTLPHTTPExportToPlainHTTPEndpoint checks the path a local Jaeger or
// collector takes: otel.endpoint "http://host:port", protocol http.
func TestOTLPHTTPExportToPlainHTTPEndpoint(t *testing.T) {
	got := make(chan *coltracepb.ExportTraceServiceRequest, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("exporter sent %s %s (%s); want POST /v1/traces, application/x-protobuf", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		} else if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("decode export request: %v", err)
		} else {
			got <- &req
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(resp)
	}))
	defer srv.Close()
	tel, err := Start(context.Background(), "parser", config.Otel{Endpoint: srv.URL, Protocol: "http"}, "", WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer.Start(context.Background(), "process gerrit.raw")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil { // flushes the batch
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case req := <-got:
		rs := req.GetResourceSpans()
		if len(rs) == 0 || len(rs[0].GetScopeSpans()) == 0 || len(rs[0].GetScopeSpans()[0].GetSpans()) == 0 {
			t.Fatalf("export request without spans: %v", req)
		}
		service := ""
		for _, a := range rs[0].GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		if name := rs[0].GetScopeSpans()[0].GetSpans()[0].GetName(); service != "gerritflow-parser" || name != "process gerrit.raw" {
			t.Errorf("exported span %q of service %q; want %q of gerritflow-parser", name, service, "process gerrit.raw")
		}
	default:
		t.Fatal("nothing exported to the OTLP/HTTP endpoint by Shutdown")
	}
}
