package jenkinssim

import (
	"container/heap"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// jenkinsVersion is what the X-Jenkins header reports.
const jenkinsVersion = "2.479.3"

const crumbField = "Jenkins-Crumb"

// Handler serves the Jenkins REST API. Stapler-style, empty path segments are
// ignored, so gojenkins' "/job/x//5/api/json" works as it does on Jenkins.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	h := w.Header()
	h.Set("X-Jenkins", jenkinsVersion)
	h.Set("X-Hudson", "1.395")
	h.Set("X-Jenkins-Session", s.session)
	h.Set("X-Content-Type-Options", "nosniff")

	if s.opts.Latency > 0 {
		time.Sleep(s.opts.Latency)
	}
	if s.failing(w, r) {
		return
	}
	if !s.authenticate(w, r) {
		return
	}
	if r.Method == http.MethodPost && s.opts.RequireCrumb && !s.validCrumb(r) {
		htmlError(w, http.StatusForbidden, "No valid crumb was included in the request")
		return
	}

	segs := splitPath(r.URL.Path)
	var tree *treeNode
	if t := r.URL.Query().Get("tree"); t != "" {
		var err error
		if tree, err = parseTree(t); err != nil {
			htmlError(w, http.StatusBadRequest, "Malformed tree expression: "+err.Error())
			return
		}
	}
	switch {
	case len(segs) == 0:
		htmlPage(w, "Dashboard [Jenkins]")
	case isAPI(segs):
		s.serveRoot(w, r, tree)
	case segs[0] == "crumbIssuer" && isAPI(segs[1:]):
		s.serveCrumb(w, r)
	case segs[0] == "queue":
		s.serveQueue(w, r, segs[1:], tree)
	case segs[0] == "job":
		s.serveJob(w, r, segs, tree)
	default:
		notFound(w)
	}
}

// isAPI matches api/json. As in Stapler, tokens after the web method are
// ignored: gojenkins fetches its crumb from /crumbIssuer/api/json/api/json.
func isAPI(segs []string) bool {
	return len(segs) >= 2 && segs[0] == "api" && segs[1] == "json"
}

// failing applies FailWith: answers the failure status, or holds the request.
func (s *Server) failing(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	code, until := s.failCode, s.failUntil
	s.mu.Unlock()
	if until.IsZero() || !time.Now().Before(until) {
		return false
	}
	if code != 0 {
		htmlError(w, code, "Jenkins is going to shut down")
		return true
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-r.Context().Done():
		return true
	case <-s.closing:
		htmlError(w, http.StatusServiceUnavailable, "Jenkins is going to shut down")
		return true
	}
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		// Jenkins: anonymous lacks Overall/Read.
		w.Header().Set("X-You-Are-Authenticated-As", "anonymous")
		w.Header().Set("X-Required-Permission", "hudson.model.Hudson.Read")
		htmlError(w, http.StatusForbidden, "Authentication required")
		return false
	}
	if subtle.ConstantTimeCompare([]byte(user), []byte(s.opts.User)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.opts.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="Jenkins"`)
		htmlError(w, http.StatusUnauthorized, "Invalid password/token for user: "+user)
		return false
	}
	return true
}

func (s *Server) sessionCookie() string { return "JSESSIONID." + s.session }

func (s *Server) crumbFor(sessionID string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(s.opts.User + ":" + sessionID))
	return hex.EncodeToString(m.Sum(nil))
}

// validCrumb checks the crumb (header or form field) against the session
// cookie, as Jenkins does since crumbs are bound to the web session.
func (s *Server) validCrumb(r *http.Request) bool {
	got := r.Header.Get(crumbField)
	if got == "" {
		got = r.FormValue(crumbField)
	}
	c, err := r.Cookie(s.sessionCookie())
	if got == "" || err != nil {
		return false
	}
	return hmac.Equal([]byte(got), []byte(s.crumbFor(c.Value)))
}

func (s *Server) serveCrumb(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	sid := "node0" + hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: s.sessionCookie(), Value: sid, Path: "/", HttpOnly: true})
	writeJSON(w, r, map[string]any{
		"_class":            "hudson.security.csrf.DefaultCrumbIssuer",
		"crumb":             s.crumbFor(sid),
		"crumbRequestField": crumbField,
	}, nil)
}

func (s *Server) base(r *http.Request) string {
	s.mu.Lock()
	u := s.url
	s.mu.Unlock()
	if u != "" {
		return u
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) serveRoot(w http.ResponseWriter, r *http.Request, tree *treeNode) {
	base := s.base(r)
	s.mu.Lock()
	now := s.opts.Now()
	s.advance(now)
	jobs := s.childRefs(s.root, base, now)
	s.mu.Unlock()
	writeJSON(w, r, map[string]any{
		"_class":          "hudson.model.Hudson",
		"assignedLabels":  []any{map[string]any{"name": "built-in"}},
		"mode":            "NORMAL",
		"nodeDescription": "the Jenkins controller's built-in node",
		"nodeName":        "",
		"numExecutors":    2,
		"description":     nil,
		"jobs":            jobs,
		"overallLoad":     map[string]any{},
		"primaryView":     map[string]any{"_class": "hudson.model.AllView", "name": "all", "url": base + "/"},
		"quietDownReason": nil,
		"quietingDown":    false,
		"slaveAgentPort":  -1,
		"unlabeledLoad":   map[string]any{"_class": "jenkins.model.UnlabeledLoadStatistics"},
		"url":             base + "/",
		"useCrumbs":       true,
		"useSecurity":     true,
		"views":           []any{map[string]any{"_class": "hudson.model.AllView", "name": "all", "url": base + "/"}},
	}, tree)
}

// serveQueue handles /queue/api/json, /queue/item/N/..., /queue/cancelItem.
func (s *Server) serveQueue(w http.ResponseWriter, r *http.Request, rest []string, tree *treeNode) {
	base := s.base(r)
	switch {
	case isAPI(rest):
		s.mu.Lock()
		now := s.opts.Now()
		s.advance(now)
		// Jenkins lists the items most likely to be built soonest last.
		waiting := make(itemHeap, 0, len(s.waiting))
		for _, it := range s.waiting {
			if it.state == stateWaiting {
				waiting = append(waiting, it)
			}
		}
		sort.Sort(sort.Reverse(waiting))
		items := make([]any, len(waiting))
		for i, it := range waiting {
			items[i] = s.itemDoc(it, base, now)
		}
		s.mu.Unlock()
		writeJSON(w, r, map[string]any{"_class": "hudson.model.Queue", "discoverableItems": []any{}, "items": items}, tree)

	case len(rest) >= 2 && rest[0] == "item":
		id, err := strconv.ParseInt(rest[1], 10, 64)
		if err != nil {
			notFound(w)
			return
		}
		s.mu.Lock()
		now := s.opts.Now()
		s.advance(now)
		it, ok := s.items[id]
		var doc map[string]any
		if ok {
			doc = s.itemDoc(it, base, now)
		}
		s.mu.Unlock()
		switch {
		case !ok:
			notFound(w)
		case len(rest) == 2:
			// Jenkins >= 2.468 (JENKINS-66105) answers 200 with no content here,
			// so that following the 303 of buildWithParameters does not 404.
			w.WriteHeader(http.StatusOK)
		case isAPI(rest[2:]):
			writeJSON(w, r, doc, tree)
		default:
			notFound(w)
		}

	case len(rest) == 1 && rest[0] == "cancelItem":
		if r.Method != http.MethodPost {
			htmlError(w, http.StatusMethodNotAllowed, "This URL requires POST")
			return
		}
		id, _ := strconv.ParseInt(r.FormValue("id"), 10, 64)
		s.mu.Lock()
		now := s.opts.Now()
		s.advance(now)
		it, ok := s.items[id]
		state := stateWaiting
		if ok {
			state = it.state
			if state == stateWaiting {
				s.cancel(it, now)
			}
		}
		s.mu.Unlock()
		switch {
		case !ok:
			htmlError(w, http.StatusNotFound, fmt.Sprintf("Provided id (%d) not found", id))
		case state == stateWaiting:
			w.WriteHeader(http.StatusNoContent)
		default: // a remembered LeftItem: Item.cancel -> leave() is false
			htmlError(w, http.StatusInternalServerError, fmt.Sprintf("Could not cancel run for id %d", id))
		}

	case len(rest) == 0:
		htmlPage(w, "Build Queue [Jenkins]")
	default:
		notFound(w)
	}
}

// resolve walks /job/a/job/b/... and returns the folder or job and the rest.
// Callers hold s.mu.
func (s *Server) resolve(segs []string) (node any, rest []string) {
	var cur any = s.root
	for len(segs) >= 2 && segs[0] == "job" {
		f, ok := cur.(*folder)
		if !ok {
			return nil, nil
		}
		next, ok := f.children[segs[1]]
		if !ok {
			return nil, nil
		}
		cur, segs = next, segs[2:]
	}
	if cur == any(s.root) {
		return nil, nil
	}
	return cur, segs
}

func (s *Server) serveJob(w http.ResponseWriter, r *http.Request, segs []string, tree *treeNode) {
	base := s.base(r)
	s.mu.Lock()
	node, rest := s.resolve(segs)
	s.mu.Unlock()
	switch n := node.(type) {
	case *folder:
		switch {
		case len(rest) == 0:
			htmlPage(w, n.path+" [Jenkins]")
		case isAPI(rest):
			s.mu.Lock()
			now := s.opts.Now()
			s.advance(now)
			doc := map[string]any{
				"_class":          "com.cloudbees.hudson.plugins.folder.Folder",
				"actions":         []any{map[string]any{}},
				"description":     nil,
				"displayName":     n.name,
				"fullDisplayName": displayPath(n.path),
				"fullName":        n.path,
				"name":            n.name,
				"url":             folderURL(base, n.path),
				"healthReport":    []any{},
				"jobs":            s.childRefs(n, base, now),
				"primaryView":     map[string]any{"_class": "hudson.model.AllView", "name": "All", "url": folderURL(base, n.path)},
				"views":           []any{map[string]any{"_class": "hudson.model.AllView", "name": "All", "url": folderURL(base, n.path)}},
			}
			s.mu.Unlock()
			writeJSON(w, r, doc, tree)
		default:
			notFound(w)
		}
	case *job:
		s.serveJobRest(w, r, n, rest, base, tree)
	default:
		notFound(w)
	}
}

func (s *Server) serveJobRest(w http.ResponseWriter, r *http.Request, j *job, rest []string, base string, tree *treeNode) {
	switch {
	case len(rest) == 0:
		htmlPage(w, j.path+" [Jenkins]")
	case isAPI(rest):
		s.mu.Lock()
		now := s.opts.Now()
		s.advance(now)
		doc := s.jobDoc(j, base, now, tree)
		s.mu.Unlock()
		writeJSON(w, r, doc, tree)
	case len(rest) == 1 && (rest[0] == "buildWithParameters" || rest[0] == "build"):
		if r.Method != http.MethodPost {
			htmlError(w, http.StatusMethodNotAllowed, "This URL requires POST")
			return
		}
		s.trigger(w, r, j, base, rest[0] == "buildWithParameters")
	default:
		s.serveBuild(w, r, j, rest, base, tree)
	}
}

// trigger queues a build, merging into an identical waiting item (303).
func (s *Server) trigger(w http.ResponseWriter, r *http.Request, j *job, base string, withParams bool) {
	var perr error
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		perr = r.ParseMultipartForm(1 << 20)
	} else {
		perr = r.ParseForm()
	}
	if perr != nil {
		// A body cut short (the client died while sending it) is refused,
		// as Jetty does, rather than queued with its parameters missing.
		htmlError(w, http.StatusBadRequest, "Bad form submission: "+perr.Error())
		return
	}
	s.mu.Lock()
	declared := append([]string(nil), j.params...)
	script := j.script
	s.mu.Unlock()

	if withParams && len(declared) == 0 {
		htmlError(w, http.StatusInternalServerError, "java.lang.IllegalStateException: This build is not parameterized!")
		return
	}
	if !withParams && len(declared) > 0 && r.FormValue("json") == "" {
		htmlError(w, http.StatusBadRequest, "This page expects a form submission")
		return
	}
	params := make([]param, 0, len(declared))
	for _, name := range declared {
		params = append(params, param{name: name, value: r.Form.Get(name)}) // absent: default ""
	}
	out := Outcome{}
	if script != nil {
		out = script(paramMap(params))
	}
	out = withDefaults(out)

	s.mu.Lock()
	now := s.opts.Now()
	s.advance(now)
	var existing *item
	for _, it := range j.waitingSorted() {
		if sameParams(it.params, params) {
			existing = it
			break
		}
	}
	var id int64
	if existing == nil {
		id = s.nextQueue
		s.nextQueue++
		it := &item{id: id, job: j, params: params, queuedAt: now, startAt: now.Add(out.QueueDelay), out: out}
		s.items[id] = it
		j.waiting[id] = it
		heap.Push(&s.waiting, it)
		j.requests++
		if s.notify != nil {
			s.notify.queued(it)
		}
	} else {
		id = existing.id
	}
	s.mu.Unlock()

	w.Header().Set("Location", fmt.Sprintf("%s/queue/item/%d/", base, id))
	switch {
	case existing != nil && withParams:
		w.WriteHeader(http.StatusSeeOther)
	default: // a new item, or /build (which answers 201 for the existing item)
		w.WriteHeader(http.StatusCreated)
	}
}

func sameParams(a, b []param) bool {
	if len(a) != len(b) {
		return false
	}
	m := paramMap(a)
	for _, p := range b {
		if v, ok := m[p.name]; !ok || v != p.value {
			return false
		}
	}
	return true
}

// serveBuild handles /job/.../<N|permalink>/{,api/json,stop}.
func (s *Server) serveBuild(w http.ResponseWriter, r *http.Request, j *job, rest []string, base string, tree *treeNode) {
	s.mu.Lock()
	now := s.opts.Now()
	s.advance(now)
	b := j.lookup(rest[0], now)
	if b == nil {
		s.mu.Unlock()
		notFound(w)
		return
	}
	sub := rest[1:]
	switch {
	case len(sub) == 0:
		s.mu.Unlock()
		htmlPage(w, fmt.Sprintf("%s #%d [Jenkins]", displayPath(j.path), b.number))
	case isAPI(sub):
		doc := s.buildDoc(b, base, now)
		s.mu.Unlock()
		writeJSON(w, r, doc, tree)
	case len(sub) == 1 && sub[0] == "stop":
		if r.Method != http.MethodPost {
			s.mu.Unlock()
			htmlError(w, http.StatusMethodNotAllowed, "This URL requires POST")
			return
		}
		if b.buildingAt(now) {
			b.abortedAt = now
			if s.notify != nil {
				s.notify.stopped(b, now)
			}
		}
		s.mu.Unlock()
		// Run.doStop -> forwardToPreviousPage: a redirect to the build page.
		http.Redirect(w, r, buildURL(base, j, b.number), http.StatusFound)
	default:
		s.mu.Unlock()
		notFound(w)
	}
}

// lookup finds a build by number or permalink. Callers hold s.mu.
func (j *job) lookup(ref string, now time.Time) *build {
	if n, err := strconv.Atoi(ref); err == nil {
		if n >= 1 && n <= len(j.builds) {
			return j.builds[n-1]
		}
		return nil
	}
	if pred, ok := permalinks[ref]; ok {
		return j.last(now, pred)
	}
	return nil
}

var permalinks = map[string]func(building bool, result string) bool{
	"lastBuild":             func(bool, string) bool { return true },
	"lastCompletedBuild":    func(b bool, _ string) bool { return !b },
	"lastSuccessfulBuild":   func(_ bool, r string) bool { return r == "SUCCESS" || r == "UNSTABLE" },
	"lastStableBuild":       func(_ bool, r string) bool { return r == "SUCCESS" },
	"lastFailedBuild":       func(_ bool, r string) bool { return r == "FAILURE" },
	"lastUnstableBuild":     func(_ bool, r string) bool { return r == "UNSTABLE" },
	"lastUnsuccessfulBuild": func(b bool, r string) bool { return !b && r != "SUCCESS" },
}

func (j *job) last(now time.Time, pred func(bool, string) bool) *build {
	for i := len(j.builds) - 1; i >= 0; i-- {
		b := j.builds[i]
		if pred(b.buildingAt(now), b.resultAt(now)) {
			return b
		}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, _ *http.Request, doc map[string]any, tree *treeNode) {
	var v any = doc
	if tree != nil {
		v = tree.apply(doc)
	}
	body, err := json.Marshal(v)
	if err != nil {
		htmlError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func htmlPage(w http.ResponseWriter, title string) {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "<!DOCTYPE html><html><head><title>%s</title></head><body></body></html>\n", html.EscapeString(title))
}

func htmlError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!DOCTYPE html><html><head><title>Error %d</title></head><body><h2>HTTP ERROR %d %s</h2><p>%s</p></body></html>\n",
		code, code, html.EscapeString(http.StatusText(code)), html.EscapeString(msg))
}

func notFound(w http.ResponseWriter) {
	htmlError(w, http.StatusNotFound, "Not Found")
}
