// Package telemetry gives a service its slog JSON logger, its OpenTelemetry
// tracer, its Prometheus registry and the HTTP server for /metrics, /healthz
// and /readyz. Nothing here is global: every service (and every test) owns its own.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// Log keys used across services, so one query finds a change everywhere.
const (
	KeyChange   = "change"
	KeyPatchset = "patchset"
	KeyProject  = "project"
	KeyBuildSet = "buildset"
	KeyJob      = "job"
	KeyDecision = "decision"
	KeyReason   = "reason"
	KeyErr      = "err"
	KeyTraceID  = "trace_id"
)

// Span attribute keys of gerritflow's own.
const (
	AttrChange   = attribute.Key("gerrit.change")
	AttrPatchset = attribute.Key("gerrit.patchset")
	AttrProject  = attribute.Key("gerrit.project")
	AttrBuildSet = attribute.Key("ci.buildset")
	AttrJob      = attribute.Key("ci.job")
	// AttrEventType is the Gerrit event type (patchset-created, ...).
	AttrEventType = attribute.Key("gerrit.event.type")
	// AttrJenkinsJob is the full name of the Jenkins job (folder/unit-tests).
	AttrJenkinsJob = attribute.Key("jenkins.job")
	// AttrReplay is the replay id of a message an operator replayed.
	AttrReplay = attribute.Key("gerritflow.replay.id")
)

// ChangeAttrs returns the gerrit.* attributes of a change (those with a value).
func ChangeAttrs(project string, change, patchset int) []attribute.KeyValue {
	var attrs []attribute.KeyValue
	if change > 0 {
		attrs = append(attrs, AttrChange.Int(change))
	}
	if patchset > 0 {
		attrs = append(attrs, AttrPatchset.Int(patchset))
	}
	if project != "" {
		attrs = append(attrs, AttrProject.String(project))
	}
	return attrs
}

// Telemetry is one service's logger, tracer, metrics and health server.
type Telemetry struct {
	Service  string
	Logger   *slog.Logger
	Tracer   trace.Tracer
	Registry *prometheus.Registry

	tp      *sdktrace.TracerProvider
	srv     *http.Server
	mux     *http.ServeMux
	addr    string
	ready   atomic.Bool
	mu      sync.Mutex
	checks  []func(context.Context) error
	closers []func(context.Context) error
}

type options struct {
	logOut   io.Writer
	exporter sdktrace.SpanExporter
	level    slog.Level
}

// Option changes what Start builds.
type Option func(*options)

// WithLogOutput sends the JSON log lines to w (default os.Stderr).
func WithLogOutput(w io.Writer) Option { return func(o *options) { o.logOut = w } }

// WithSpanExporter exports spans synchronously to e (tests), in addition to any OTLP endpoint.
func WithSpanExporter(e sdktrace.SpanExporter) Option { return func(o *options) { o.exporter = e } }

// WithLogLevel sets the minimum level (default Info).
func WithLogLevel(l slog.Level) Option { return func(o *options) { o.level = l } }

// Start builds the telemetry of service and starts its HTTP server on listen
// ("" = no server; "127.0.0.1:0" = a free port, see Addr).
func Start(ctx context.Context, service string, otel config.Otel, listen string, opts ...Option) (*Telemetry, error) {
	o := options{logOut: os.Stderr}
	for _, fn := range opts {
		fn(&o)
	}
	t := &Telemetry{Service: service, Registry: prometheus.NewRegistry(), mux: http.NewServeMux()}
	t.Logger = slog.New(traceHandler{slog.NewJSONHandler(o.logOut, &slog.HandlerOptions{Level: o.level})}).
		With("service", service)
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	prefix := otel.ServiceNamePrefix
	if prefix == "" {
		prefix = "gerritflow"
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(prefix+"-"+service))
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample()))}
	if otel.Endpoint != "" {
		exp, err := otlpExporter(ctx, otel)
		if err != nil {
			return nil, err
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	if o.exporter != nil {
		tpOpts = append(tpOpts, sdktrace.WithSyncer(o.exporter))
	}
	t.tp = sdktrace.NewTracerProvider(tpOpts...)
	t.Tracer = t.tp.Tracer("github.com/gerritflow/gerritflow/" + service)

	t.mux.Handle("GET /metrics", promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{Registry: t.Registry}))
	t.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	t.mux.HandleFunc("GET /readyz", t.serveReady)
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("listen %s (listen.%s): %w", listen, service, err)
		}
		t.addr = ln.Addr().String()
		t.srv = &http.Server{Handler: t.mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := t.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Logger.Error("http server stopped", KeyErr, err)
			}
		}()
	}
	return t, nil
}

func otlpExporter(ctx context.Context, c config.Otel) (sdktrace.SpanExporter, error) {
	endpoint := c.Endpoint
	insecure := c.Insecure || strings.HasPrefix(endpoint, "http://")
	endpoint = strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	switch c.Protocol {
	case "http":
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint)}
		if insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	default:
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(endpoint)}
		if insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	}
}

// Addr is the HTTP server's address ("" without a server).
func (t *Telemetry) Addr() string { return t.addr }

// Handle adds a route to the service's HTTP server (e.g. the monitor's
// Jenkins notification endpoint).
func (t *Telemetry) Handle(pattern string, h http.Handler) { t.mux.Handle(pattern, h) }

// AddReadyCheck adds a condition of /readyz (e.g. NATS connected).
func (t *Telemetry) AddReadyCheck(fn func(context.Context) error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checks = append(t.checks, fn)
}

// OnShutdown runs fn at Shutdown, last added first.
func (t *Telemetry) OnShutdown(fn func(context.Context) error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closers = append(t.closers, fn)
}

// Ready marks the service ready; NotReady marks it draining.
func (t *Telemetry) Ready()    { t.ready.Store(true) }
func (t *Telemetry) NotReady() { t.ready.Store(false) }

func (t *Telemetry) serveReady(w http.ResponseWriter, r *http.Request) {
	if !t.ready.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	t.mu.Lock()
	checks := append([]func(context.Context) error(nil), t.checks...)
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	for _, c := range checks {
		if err := c(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// HTTPClient returns the client for peer ("jenkins", "gerrit"). Each request
// is a client span of this service's tracer, named "<peer> <METHOD> <path>",
// carrying the gerrit.* and ci.* attributes of the span that makes the call
// (see clientAttrs); and its latency is observed in
// gerritflow_<service>_http_client_seconds{peer,method,code}, without URLs
// in the labels.
func (t *Telemetry) HTTPClient(peer string, timeout time.Duration) *http.Client {
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	seconds := t.Histogram("http_client_seconds",
		"Latency of HTTP calls to Jenkins and Gerrit, by peer, method and status code (\"error\": no response).",
		"peer", "method", "code").MustCurryWith(prometheus.Labels{"peer": peer})
	measured := measuredTransport{next: http.DefaultTransport.(*http.Transport).Clone(), seconds: seconds}
	traced := otelhttp.NewTransport(measured,
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithPropagators(bus.Propagator),
		otelhttp.WithSpanOptions(trace.WithAttributes(semconv.ServicePeerName(peer))),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return peer + " " + r.Method + " " + r.URL.Path
		}))
	return &http.Client{Transport: callerAttrs{next: traced}, Timeout: timeout}
}

// clientAttrs are the attributes a client span takes over from the span
// that makes the call: who the call is for.
var clientAttrs = []attribute.Key{AttrChange, AttrPatchset, AttrProject, AttrEventType, AttrBuildSet, AttrJob, AttrJenkinsJob}

type callerAttrsKey struct{}

// callerAttrs runs before otelhttp starts the client span: it reads the
// clientAttrs of the caller's span (an SDK span exposes what was set on it)
// and hands them down in the request's context.
type callerAttrs struct{ next http.RoundTripper }

func (rt callerAttrs) RoundTrip(r *http.Request) (*http.Response, error) {
	if ro, ok := trace.SpanFromContext(r.Context()).(sdktrace.ReadOnlySpan); ok {
		var attrs []attribute.KeyValue
		for _, kv := range ro.Attributes() {
			if slices.Contains(clientAttrs, kv.Key) {
				attrs = append(attrs, kv)
			}
		}
		if len(attrs) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), callerAttrsKey{}, attrs))
		}
	}
	return rt.next.RoundTrip(r)
}

// measuredTransport runs inside the client span: it sets the caller's
// attributes on it and measures the call on the wire.
type measuredTransport struct {
	next    http.RoundTripper
	seconds prometheus.ObserverVec // by method, code
}

func (rt measuredTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if attrs, ok := r.Context().Value(callerAttrsKey{}).([]attribute.KeyValue); ok {
		trace.SpanFromContext(r.Context()).SetAttributes(attrs...)
	}
	start := time.Now()
	resp, err := rt.next.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	rt.seconds.WithLabelValues(r.Method, code).Observe(time.Since(start).Seconds())
	return resp, err
}

// TracerProvider exposes the provider (for libraries that take one).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// Shutdown stops the HTTP server, runs the shutdown hooks and flushes spans.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t.NotReady()
	var errs []error
	t.mu.Lock()
	closers := t.closers
	t.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i](ctx))
	}
	if t.srv != nil {
		errs = append(errs, t.srv.Shutdown(ctx))
	}
	errs = append(errs, t.tp.Shutdown(ctx))
	return errors.Join(errs...)
}

// traceHandler adds the trace id of the context's span to every record.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		r.AddAttrs(slog.String(KeyTraceID, sc.TraceID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// Counter registers a counter vector named gerritflow_<service>_<name>.
func (t *Telemetry) Counter(name, help string, labels ...string) *prometheus.CounterVec {
	return register(t.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricName(t.Service, name), Help: help}, labels))
}

// Gauge registers a gauge vector named gerritflow_<service>_<name>.
func (t *Telemetry) Gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return register(t.Registry, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricName(t.Service, name), Help: help}, labels))
}

// Histogram registers a histogram vector named gerritflow_<service>_<name> (seconds).
func (t *Telemetry) Histogram(name, help string, labels ...string) *prometheus.HistogramVec {
	return register(t.Registry, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricName(t.Service, name), Help: help,
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14)}, labels))
}

// register adds c, or returns the collector registered under the same name
// (two handlers of one service in one process share their metrics).
func register[C prometheus.Collector](r *prometheus.Registry, c C) C {
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("telemetry: register metric: %v", err))
	}
	return c
}

func metricName(service, name string) string {
	return "gerritflow_" + strings.ReplaceAll(service, "-", "_") + "_" + name
}
