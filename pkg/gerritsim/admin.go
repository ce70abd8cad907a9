package gerritsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// AdminHandler serves the simulator's own JSON API under /sim/, for a person
// or a script playing the developers when the simulator runs as a program
// (gfdev sim). It is not Gerrit's API: plain JSON, no ")]}'" prefix, no
// authentication. Every action calls the Go method of the same name, so the
// events it emits are the same.
//
//	POST /sim/changes                  {"project","branch","subject","topic","wip","private","files","uploader"} -> 201
//	POST /sim/changes/{n}/patchsets    the same, plus "kind"                                             -> 201
//	POST /sim/changes/{n}/comments     {"author","message","patchset","labels"}                          -> 201
//	POST /sim/changes/{n}/abandon      {"by","reason"} (also restore, merge)                             -> 200
//	GET  /sim/changes/{n}              the change and its patch sets
//	GET  /sim/changes/{n}/reviews      the reviews the CI account posted on it
//	GET  /sim/reviews                  every review the CI account posted
//
// Errors are {"error": "..."} with 400 (bad JSON, unknown field, invalid
// value), 404 (no such change or path), 405 (wrong method) or 409 (closed change).
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sim/changes", s.adminUpload)
	mux.HandleFunc("POST /sim/changes/{n}/patchsets", s.adminUpload)
	mux.HandleFunc("POST /sim/changes/{n}/comments", s.adminComment)
	mux.HandleFunc("POST /sim/changes/{n}/{action}", s.adminTransition)
	mux.HandleFunc("GET /sim/changes/{n}", s.adminChange)
	mux.HandleFunc("GET /sim/changes/{n}/reviews", s.adminReviews)
	mux.HandleFunc("GET /sim/reviews", s.adminReviews)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		if pattern == "" { // ServeMux's own 404 or 405: say it in JSON
			rec := &statusRecorder{ResponseWriter: w}
			mux.ServeHTTP(rec, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// statusRecorder turns ServeMux's plain-text 404 and 405 into JSON errors,
// keeping its Allow header.
type statusRecorder struct {
	http.ResponseWriter
	wrote bool
}

func (r *statusRecorder) WriteHeader(code int) {
	r.Header().Set("Content-Type", "application/json")
	r.Header().Del("X-Content-Type-Options")
	r.ResponseWriter.WriteHeader(code)
	msg := "no such path"
	if code == http.StatusMethodNotAllowed {
		msg = "method not allowed; allowed: " + r.Header().Get("Allow")
	}
	_ = json.NewEncoder(r.ResponseWriter).Encode(adminError{Error: msg})
	r.wrote = true
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.wrote {
		return len(p), nil // ServeMux's text, replaced by the JSON above
	}
	return r.ResponseWriter.Write(p)
}

type adminError struct {
	Error string `json:"error"`
}

// adminAccount is an Account in the admin API's JSON.
type adminAccount struct {
	Name     string `json:"name"`
	Email    string `json:"email"`
	Username string `json:"username"`
}

func (a *adminAccount) account() Account {
	if a == nil {
		return Account{}
	}
	return Account{Name: a.Name, Email: a.Email, Username: a.Username}
}

type adminUploadInput struct {
	Project  string        `json:"project"`
	Branch   string        `json:"branch"`
	Subject  string        `json:"subject"`
	Topic    string        `json:"topic"`
	Kind     string        `json:"kind"`
	WIP      bool          `json:"wip"`
	Private  bool          `json:"private"`
	Files    []string      `json:"files"`
	Uploader *adminAccount `json:"uploader"`
}

type adminUploaded struct {
	Change   int    `json:"change"`
	Patchset int    `json:"patchset"`
	Revision string `json:"revision"`
	URL      string `json:"url"`
}

func (s *Server) adminUpload(w http.ResponseWriter, r *http.Request) {
	var in adminUploadInput
	if !decodeAdmin(w, r, &in, false) {
		return
	}
	u := Upload{Project: in.Project, Branch: in.Branch, Subject: in.Subject, Topic: in.Topic, Kind: in.Kind,
		WIP: in.WIP, Private: in.Private, Files: in.Files, Uploader: in.Uploader.account()}
	if r.PathValue("n") != "" {
		n, ok := changeNumber(w, r)
		if !ok {
			return
		}
		u.Change = n
		if u.Project == "" {
			u.Project = s.projectOf(n)
		}
	} else if in.Kind != "" && in.Kind != KindRework {
		adminFail(w, fmt.Errorf("kind %s: %w (a new change's patch set 1 is always REWORK)", in.Kind, ErrInvalid))
		return
	}
	n, ps, event, err := s.Upload(u)
	if err != nil {
		adminFail(w, err)
		return
	}
	var ev struct {
		Change   struct{ URL string }      `json:"change"`
		PatchSet struct{ Revision string } `json:"patchSet"`
	}
	_ = json.Unmarshal(event, &ev) // our own encoding of patchset-created
	writeAdmin(w, http.StatusCreated, adminUploaded{Change: n, Patchset: ps, Revision: ev.PatchSet.Revision, URL: ev.Change.URL})
}

// projectOf is change n's project, or "" when there is no change n (Upload
// then answers not found).
func (s *Server) projectOf(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.changes[n]; ok {
		return c.project
	}
	return ""
}

type adminCommentInput struct {
	Author   *adminAccount  `json:"author"`
	Message  string         `json:"message"`
	Patchset int            `json:"patchset"`
	Labels   map[string]int `json:"labels"`
}

func (s *Server) adminComment(w http.ResponseWriter, r *http.Request) {
	n, ok := changeNumber(w, r)
	if !ok {
		return
	}
	var in adminCommentInput
	if !decodeAdmin(w, r, &in, false) {
		return
	}
	author := in.Author.account()
	if author == (Account{}) {
		author = DefaultUploader
	}
	event, err := s.Comment(n, in.Patchset, author, in.Message, in.Labels)
	if err != nil {
		adminFail(w, err)
		return
	}
	var ev struct {
		PatchSet struct{ Number int } `json:"patchSet"`
	}
	_ = json.Unmarshal(event, &ev)
	writeAdmin(w, http.StatusCreated, map[string]int{"change": n, "patchset": ev.PatchSet.Number})
}

type adminTransitionInput struct {
	By     *adminAccount `json:"by"`
	Reason string        `json:"reason"`
}

func (s *Server) adminTransition(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if action != "abandon" && action != "restore" && action != "merge" {
		writeAdmin(w, http.StatusNotFound, adminError{Error: "no such action " + strconv.Quote(action) + " (abandon, restore, merge)"})
		return
	}
	n, ok := changeNumber(w, r)
	if !ok {
		return
	}
	var in adminTransitionInput
	if !decodeAdmin(w, r, &in, true) {
		return
	}
	var err error
	switch action {
	case "abandon":
		_, err = s.Abandon(n, in.By.account(), in.Reason)
	case "restore":
		_, err = s.Restore(n, in.By.account(), in.Reason)
	case "merge":
		if in.Reason != "" {
			adminFail(w, fmt.Errorf("reason: %w (a merge takes none)", ErrInvalid))
			return
		}
		_, err = s.Merge(n, in.By.account())
	}
	if err != nil {
		adminFail(w, err)
		return
	}
	writeAdmin(w, http.StatusOK, map[string]any{"change": n, "status": s.statusOf(n)})
}

func (s *Server) statusOf(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes[n].status
}

type adminPatchSet struct {
	Number   int    `json:"number"`
	Revision string `json:"revision"`
	Kind     string `json:"kind"`
}

type adminChangeOutput struct {
	Change          int             `json:"change"`
	Project         string          `json:"project"`
	Branch          string          `json:"branch"`
	Status          string          `json:"status"`
	Subject         string          `json:"subject"`
	CurrentPatchset int             `json:"current_patchset"`
	Patchsets       []adminPatchSet `json:"patchsets"`
}

func (s *Server) adminChange(w http.ResponseWriter, r *http.Request) {
	n, ok := changeNumber(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	c, found := s.changes[n]
	var out adminChangeOutput
	if found {
		out = adminChangeOutput{Change: n, Project: c.project, Branch: c.branch, Status: c.status,
			Subject: c.subject, CurrentPatchset: c.current().number}
		for _, ps := range c.patchSets {
			out.Patchsets = append(out.Patchsets, adminPatchSet{Number: ps.number, Revision: ps.revision, Kind: ps.kind})
		}
	}
	s.mu.Unlock()
	if !found {
		adminFail(w, fmt.Errorf("change %d: %w", n, ErrNotFound))
		return
	}
	writeAdmin(w, http.StatusOK, out)
}

type adminReview struct {
	Change   int            `json:"change"`
	Patchset int            `json:"patchset"`
	Revision string         `json:"revision"`
	Project  string         `json:"project"`
	Labels   map[string]int `json:"labels"`
	Message  string         `json:"message"`
	Tag      string         `json:"tag"`
	Notify   string         `json:"notify"`
	At       time.Time      `json:"at"`
}

func (s *Server) adminReviews(w http.ResponseWriter, r *http.Request) {
	reviews := s.Reviews()
	if r.PathValue("n") != "" {
		n, ok := changeNumber(w, r)
		if !ok {
			return
		}
		if s.projectOf(n) == "" {
			adminFail(w, fmt.Errorf("change %d: %w", n, ErrNotFound))
			return
		}
		reviews = s.ReviewsFor(n)
	}
	out := make([]adminReview, 0, len(reviews))
	for _, rv := range reviews {
		out = append(out, adminReview{Change: rv.Change, Patchset: rv.PatchSet, Revision: rv.Revision, Project: rv.Project,
			Labels: rv.Input.Labels, Message: rv.Input.Message, Tag: rv.Input.Tag, Notify: rv.Input.Notify, At: rv.At})
	}
	writeAdmin(w, http.StatusOK, out)
}

// changeNumber reads {n}; on a bad one it answers 400 and returns false.
func changeNumber(w http.ResponseWriter, r *http.Request) (int, bool) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n <= 0 {
		writeAdmin(w, http.StatusBadRequest, adminError{Error: fmt.Sprintf("change number %q: want a positive integer", r.PathValue("n"))})
		return 0, false
	}
	return n, true
}

// maxAdminBody bounds a request body.
const maxAdminBody = 1 << 20

// decodeAdmin decodes the JSON body strictly into v; an empty body is
// accepted when optional. On error it answers 400 and returns false.
func decodeAdmin(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) && optional {
		return true
	}
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("empty body: want a JSON object")
		}
		writeAdmin(w, http.StatusBadRequest, adminError{Error: "request body: " + strings.TrimPrefix(err.Error(), "json: ")})
		return false
	}
	return true
}

// adminFail answers err with the status its sentinel stands for.
func adminFail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		status = http.StatusConflict
	}
	var le *labelError
	if errors.As(err, &le) && le.status != 0 {
		status = le.status
	}
	writeAdmin(w, status, adminError{Error: strings.TrimPrefix(err.Error(), "gerritsim: ")})
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
