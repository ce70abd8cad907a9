// Package status serves gerritflow's live status page: every build set in
// flight and recently finished, grouped by project and change, with its
// jobs and its vote, as Zuul's status page shows them.
//
// One watch per bucket (buildsets, builds, votes) feeds an in-memory Model
// for the whole process; every FlushEvery the changed groups are rendered
// once and fanned out to every browser over server-sent events. A browser
// that reconnects names the last batch it has (Last-Event-ID) and gets what
// it missed, or the whole list when that is no longer held.
package status

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Needs is what the status page binds to: three buckets, read only.
var Needs = streams.Need{Buckets: []string{streams.BucketBuildSets, streams.BucketBuilds, streams.BucketVotes}}

// Settings tune the page.
type Settings struct {
	Links        Links
	Recent       time.Duration // finished build sets stay listed this long
	MaxBuildSets int           // bound of the model (0: none)
	FlushEvery   time.Duration // how often changes are pushed to browsers (default 250ms)
	PruneEvery   time.Duration // how often old build sets are dropped (default recent/10, 1s..30s)
	Now          func() time.Time
}

const (
	ringFrames  = 512     // batches kept for browsers that reconnect
	ringBytes   = 8 << 20 // and at most this many bytes of them
	clientQueue = 64      // batches a browser may lag behind before it is dropped
	pingEvery   = 20 * time.Second
)

// Server holds the model and serves the page, the API and the event stream.
type Server struct {
	set    Settings
	log    *slog.Logger
	tpl    *template.Template
	assets map[string]asset
	mux    *http.ServeMux

	mu      sync.RWMutex
	model   *Model
	version uint64 // of the last batch; starts at the process's start time, so a browser of another process never matches
	loaded  bool
	ring    []frame
	clients map[*client]struct{}
	closed  bool
	reset   frame // the last reset event rendered, reused while the version holds

	sets     *prometheus.GaugeVec
	updates  *prometheus.CounterVec
	bad      *prometheus.CounterVec
	streams  *prometheus.GaugeVec
	dropped  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

type frame struct {
	version uint64
	data    []byte
}

type client struct {
	ch chan []byte // closed when the client is dropped or the server closes
}

// New returns a Server with an empty model; Run fills it.
func New(set Settings, tel *telemetry.Telemetry) (*Server, error) {
	if set.Now == nil {
		set.Now = time.Now
	}
	if set.Recent <= 0 {
		set.Recent = time.Hour
	}
	if set.FlushEvery <= 0 {
		set.FlushEvery = 250 * time.Millisecond
	}
	if set.PruneEvery <= 0 {
		set.PruneEvery = min(max(set.Recent/10, time.Second), 30*time.Second)
	}
	assets, err := loadAssets()
	if err != nil {
		return nil, fmt.Errorf("status assets: %w", err)
	}
	tpl, err := templates(assets, set.Now)
	if err != nil {
		return nil, fmt.Errorf("status templates: %w", err)
	}
	s := &Server{
		set: set, log: tel.Logger, tpl: tpl, assets: assets, mux: http.NewServeMux(),
		model:   NewModel(set.Recent, set.MaxBuildSets, set.Now().Add(-time.Minute)),
		version: uint64(time.Now().UnixMicro()),
		clients: map[*client]struct{}{},
		sets:    tel.Gauge("buildsets", "Build sets listed on the page.", "state"),
		updates: tel.Counter("watch_updates_total", "KV records received from the watches.", "bucket"),
		bad:     tel.Counter("watch_errors_total", "KV records that could not be decoded (not shown).", "bucket"),
		streams: tel.Gauge("sse_clients", "Browsers connected to the event stream.", "kind"),
		dropped: tel.Counter("sse_dropped_total", "Event streams closed because the browser fell behind.", "kind"),
		duration: tel.Histogram("render_seconds", "Time to render the page, a batch of updates, or an API answer.",
			"what"),
	}
	s.mux.HandleFunc("GET /{$}", s.servePage)
	s.mux.HandleFunc("GET /static/{name}", s.serveAsset)
	s.mux.HandleFunc("GET /api/buildsets", s.serveBuildSets)
	s.mux.HandleFunc("GET /api/changes/{n}", s.serveChange)
	s.mux.HandleFunc("GET /api/events", s.serveEvents)
	return s, nil
}

// Handler serves the page, its assets, the API and the event stream.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		s.mux.ServeHTTP(w, r)
	})
}

// pageData is what the page template renders.
type pageData struct {
	Version            uint64
	Filter             Filter
	Projects           []Project
	Any                bool
	InFlight, Finished int
	Recent             string
	States             []string
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f, _ := ParseFilter(r.URL.Query()) // a bad change number filters nothing; the API says why
	s.mu.RLock()
	d := pageData{Version: s.version, Filter: f, Projects: s.model.Projects(f, s.set.Links),
		Recent: formatSeconds(s.set.Recent.Seconds()), States: StateOptions}
	d.InFlight, d.Finished = s.model.Counts()
	s.mu.RUnlock()
	d.Any = slices.ContainsFunc(d.Projects, func(p Project) bool { return !p.Hidden })
	body, err := s.render("page", d)
	if err != nil {
		s.log.ErrorContext(r.Context(), "render page", telemetry.KeyErr, err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	s.duration.WithLabelValues("page").Observe(time.Since(start).Seconds())
	w.Header().Set("Cache-Control", "no-store")
	writeBody(w, r, "text/html; charset=utf-8", body)
}

// BuildSets is the answer of GET /api/buildsets.
type BuildSets struct {
	Version   uint64    `json:"version"`
	InFlight  int       `json:"in_flight"`
	Finished  int       `json:"finished"`
	BuildSets []SetView `json:"buildsets"`
}

func (s *Server) serveBuildSets(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	s.mu.RLock()
	out := BuildSets{Version: s.version, BuildSets: s.model.Views(f, s.set.Links)}
	s.mu.RUnlock()
	for _, v := range out.BuildSets {
		if v.InFlight {
			out.InFlight++
		} else {
			out.Finished++
		}
	}
	writeJSON(w, r, http.StatusOK, out)
	s.duration.WithLabelValues("api").Observe(time.Since(start).Seconds())
}

// Change is the answer of GET /api/changes/<n>.
type Change struct {
	Change    int       `json:"change"`
	BuildSets []SetView `json:"buildsets"`
}

func (s *Server) serveChange(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	q.Set("change", r.PathValue("n"))
	f, err := ParseFilter(q)
	if err != nil {
		writeError(w, r, http.StatusBadRequest, err)
		return
	}
	s.mu.RLock()
	out := Change{Change: f.Change, BuildSets: s.model.Views(f, s.set.Links)}
	s.mu.RUnlock()
	if len(out.BuildSets) == 0 {
		writeError(w, r, http.StatusNotFound, fmt.Errorf("change %d: %w (in flight or finished in the last %v)", f.Change, errNoChange, s.set.Recent))
		return
	}
	writeJSON(w, r, http.StatusOK, out)
}

// batch is the data of a "batch" event: the groups that changed, rendered.
type batch struct {
	V       uint64     `json:"v"`
	Changes []fragment `json:"changes,omitempty"`
	Removed []string   `json:"removed,omitempty"`
	Counts  counts     `json:"counts"`
	Notes   []Note     `json:"notes,omitempty"`
}

type fragment struct {
	Key     string `json:"key"`
	Project string `json:"project"`
	PToken  string `json:"ptoken"`
	HTML    string `json:"html"`
}

type counts struct {
	InFlight int `json:"in_flight"`
	Finished int `json:"finished"`
}

// reset is the data of a "reset" event: the whole list.
type reset struct {
	V      uint64 `json:"v"`
	HTML   string `json:"html"`
	Counts counts `json:"counts"`
}

// flush renders the groups changed since the last flush, once, and sends
// them to every connected browser. s.mu must not be held.
func (s *Server) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, notes := s.model.TakeDirty()
	if len(keys) == 0 {
		return
	}
	start := time.Now()
	only := map[string]bool{}
	for _, k := range keys {
		only[k] = true
	}
	gs := s.model.groups(s.set.Links, only)
	b := batch{V: s.version + 1, Notes: notes, Counts: s.counts()}
	for _, k := range keys {
		g := gs[k]
		if g == nil {
			b.Removed = append(b.Removed, k)
			continue
		}
		html, err := s.render("change", g)
		if err != nil {
			s.log.Error("render change", telemetry.KeyErr, err, "group", k)
			continue
		}
		b.Changes = append(b.Changes, fragment{Key: k, Project: g.Project, PToken: subject.Token(g.Project), HTML: string(html)})
	}
	s.publish("batch", b)
	s.duration.WithLabelValues("batch").Observe(time.Since(start).Seconds())
}

func (s *Server) counts() counts {
	in, fin := s.model.Counts()
	s.sets.WithLabelValues("in_flight").Set(float64(in))
	s.sets.WithLabelValues("finished").Set(float64(fin))
	return counts{InFlight: in, Finished: fin}
}

// publish sends one event to every browser and keeps it for those that
// reconnect. s.mu is held.
func (s *Server) publish(event string, data any) {
	s.version++
	s.reset = frame{} // the whole list as of an older version: of no use any more
	f := frame{version: s.version, data: sseFrame(s.version, event, data)}
	s.ring = append(s.ring, f)
	size := 0
	for _, x := range s.ring {
		size += len(x.data)
	}
	for len(s.ring) > 1 && (len(s.ring) > ringFrames || size > ringBytes) {
		size -= len(s.ring[0].data)
		s.ring = s.ring[1:]
	}
	for c := range s.clients {
		select {
		case c.ch <- f.data:
		default: // too far behind: it reconnects and catches up from the ring, or gets a reset
			close(c.ch)
			delete(s.clients, c)
			s.dropped.WithLabelValues("slow").Inc()
		}
	}
	s.streams.WithLabelValues("sse").Set(float64(len(s.clients)))
}

func sseFrame(id uint64, event string, data any) []byte {
	b, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("status: encode %s event: %v", event, err)) // our own types always encode
	}
	return fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", id, event, b)
}

// catchUp returns what a browser that has version since needs: the batches
// after it, or a reset. s.mu is held.
func (s *Server) catchUp(since uint64, known bool) ([][]byte, error) {
	if known && since == s.version {
		return nil, nil
	}
	if known && since < s.version && len(s.ring) > 0 && s.ring[0].version <= since+1 {
		var out [][]byte
		for _, f := range s.ring {
			if f.version > since {
				out = append(out, f.data)
			}
		}
		return out, nil
	}
	if s.reset.version == s.version && s.reset.data != nil { // browsers reconnecting together share one rendering
		return [][]byte{s.reset.data}, nil
	}
	var html strings.Builder
	for _, p := range s.model.Projects(Filter{}, s.set.Links) {
		b, err := s.render("project", p)
		if err != nil {
			return nil, err
		}
		html.Write(b)
	}
	s.reset = frame{version: s.version, data: sseFrame(s.version, "reset", reset{V: s.version, HTML: html.String(), Counts: s.counts()})}
	return [][]byte{s.reset.data}, nil
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("since")
	}
	since, err := strconv.ParseUint(id, 10, 64)
	known := err == nil
	c := &client{ch: make(chan []byte, clientQueue)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	first, err := s.catchUp(since, known)
	if err == nil {
		s.clients[c] = struct{}{}
		s.streams.WithLabelValues("sse").Set(float64(len(s.clients)))
	}
	s.mu.Unlock()
	if err != nil {
		s.log.ErrorContext(r.Context(), "render reset", telemetry.KeyErr, err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	defer func() {
		s.mu.Lock()
		if _, ok := s.clients[c]; ok {
			delete(s.clients, c)
			s.streams.WithLabelValues("sse").Set(float64(len(s.clients)))
		}
		s.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 2000\n\n")) {
		return
	}
	for _, f := range first {
		if !write(f) {
			return
		}
	}
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case f, ok := <-c.ch:
			if !ok {
				return
			}
			if !write(f) {
				return
			}
		case <-ping.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// Close ends every event stream and refuses new ones (the HTTP server can
// then shut down: a stream is never idle).
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.clients {
		close(c.ch)
		delete(s.clients, c)
	}
	s.streams.WithLabelValues("sse").Set(0)
}

// Loaded reports whether the watches delivered every record that existed at start.
func (s *Server) Loaded() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.loaded
}

func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if code != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(b)
		return
	}
	writeBody(w, r, "application/json", b)
}

func writeError(w http.ResponseWriter, r *http.Request, code int, err error) {
	writeJSON(w, r, code, map[string]string{"error": err.Error()})
}

// writeBody writes body, gzipped when the client takes it and it is worth it.
func writeBody(w http.ResponseWriter, r *http.Request, ctype string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Add("Vary", "Accept-Encoding")
	if len(body) < 1024 || !acceptsGzip(r) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		return
	}
	h.Set("Content-Encoding", "gzip")
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	_, _ = gz.Write(body)
	_ = gz.Close()
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if enc, q, _ := strings.Cut(strings.TrimSpace(part), ";"); enc == "gzip" && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

var errWatchClosed = errors.New("watch closed")
