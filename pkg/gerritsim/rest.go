package gerritsim

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// magicPrefix starts every JSON answer of Gerrit's REST API (XSSI guard);
// go-gerrit strips exactly these five bytes.
const magicPrefix = ")]}'\n"

// timeLayout is the timestamp format of Gerrit's REST API (UTC).
const timeLayout = "2006-01-02 15:04:05.000000000"

// Version is what GET /config/server/version answers.
const Version = "3.10.1"

// Handler serves the REST API:
//
//	GET  /a/accounts/self
//	GET  /a/config/server/version
//	GET  /a/changes/<id>[/detail]                   id: <number>, <project>~<number>, Change-Id, <project>~<branch>~<Change-Id>
//	GET  /a/changes/<id>/revisions/<rev>/files[/]   rev: sha (or a unique prefix), patch set number, "current"
//	POST /a/changes/<id>/revisions/<rev>/review
//
// /a/ requires basic auth with the CI account (401 otherwise); the same
// paths without /a/ are anonymous and read-only (403 for the rest), as on a
// Gerrit site that lets anonymous users read.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	status := 0
	if s.failStatus != 0 && time.Now().Before(s.failUntil) {
		status = s.failStatus
	}
	s.mu.Unlock()
	if status != 0 {
		textError(w, status, http.StatusText(status))
		return
	}

	segs, err := segments(r.URL.EscapedPath())
	if err != nil {
		textError(w, http.StatusBadRequest, err.Error())
		return
	}
	authed := false
	if len(segs) > 0 && segs[0] == "a" {
		segs = segs[1:]
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="Gerrit Code Review"`)
			textError(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		authed = true
	}
	if len(segs) == 0 {
		textError(w, http.StatusNotFound, "Not Found")
		return
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if !authed && (write || segs[0] == "accounts") {
		textError(w, http.StatusForbidden, "Authentication required")
		return
	}

	switch {
	case len(segs) == 2 && segs[0] == "accounts":
		if !s.allow(w, r, http.MethodGet) {
			return
		}
		if segs[1] != "self" && segs[1] != s.ci.Username && segs[1] != strconv.Itoa(s.ci.ID) {
			textError(w, http.StatusNotFound, "Not found: "+segs[1])
			return
		}
		writeJSON(w, http.StatusOK, accountInfo(s.ci))
	case len(segs) == 3 && segs[0] == "config" && segs[1] == "server" && segs[2] == "version":
		if s.allow(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, Version)
		}
	case len(segs) >= 2 && segs[0] == "changes":
		s.serveChange(w, r, segs[1], segs[2:])
	default:
		textError(w, http.StatusNotFound, "Not Found")
	}
}

func (s *Server) serveChange(w http.ResponseWriter, r *http.Request, id string, rest []string) {
	switch {
	case len(rest) == 0 || len(rest) == 1 && rest[0] == "detail":
		if !s.allow(w, r, http.MethodGet) {
			return
		}
		opts := map[string]bool{}
		for _, o := range r.URL.Query()["o"] {
			opts[strings.ToUpper(o)] = true
		}
		if len(rest) == 1 {
			for _, o := range []string{"LABELS", "DETAILED_LABELS", "DETAILED_ACCOUNTS", "MESSAGES"} {
				opts[o] = true
			}
		}
		s.mu.Lock()
		c, ok := s.find(id)
		var info changeInfo
		if ok {
			info = s.changeInfo(c, opts)
		}
		s.mu.Unlock()
		if !ok {
			textError(w, http.StatusNotFound, "Not found: "+id)
			return
		}
		writeJSON(w, http.StatusOK, info)
	case len(rest) == 3 && rest[0] == "revisions" && rest[2] == "files":
		if !s.allow(w, r, http.MethodGet) {
			return
		}
		s.mu.Lock()
		files, code, msg := s.files(id, rest[1])
		s.mu.Unlock()
		if code != http.StatusOK {
			textError(w, code, msg)
			return
		}
		writeJSON(w, http.StatusOK, files)
	case len(rest) == 3 && rest[0] == "revisions" && rest[2] == "review":
		if s.allow(w, r, http.MethodPost) {
			s.postReview(w, r, id, rest[1])
		}
	default:
		textError(w, http.StatusNotFound, "Not Found")
	}
}

func (s *Server) files(id, rev string) (map[string]fileInfo, int, string) {
	c, ok := s.find(id)
	if !ok {
		return nil, http.StatusNotFound, "Not found: " + id
	}
	ps, ok := c.revision(rev)
	if !ok {
		return nil, http.StatusNotFound, "Not found: " + rev
	}
	out := map[string]fileInfo{"/COMMIT_MSG": {Status: "A", LinesInserted: 6, Size: 200, SizeDelta: 200}}
	for _, f := range ps.files {
		out[f] = fileInfo{LinesInserted: insertionsPerFile, LinesDeleted: deletionsPerFile, Size: 1000, SizeDelta: 8 * (insertionsPerFile - deletionsPerFile)}
	}
	return out, http.StatusOK, ""
}

func (s *Server) postReview(w http.ResponseWriter, r *http.Request, id, rev string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		textError(w, http.StatusBadRequest, "cannot read body: "+err.Error())
		return
	}
	var in ReviewInput
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			textError(w, http.StatusBadRequest, "Invalid JSON in request: "+err.Error())
			return
		}
	}
	in.Raw = body

	code, msg := http.StatusOK, ""
	err = s.update(func() ([]emitted, error) {
		c, ok := s.find(id)
		if !ok {
			code, msg = http.StatusNotFound, "Not found: "+id
			return nil, ErrNotFound
		}
		ps, ok := c.revision(rev)
		if !ok {
			code, msg = http.StatusNotFound, "Not found: "+rev
			return nil, ErrNotFound
		}
		if err := s.checkLabels(c, in.Labels); err != nil {
			code, msg = http.StatusBadRequest, err.Error()
			if le := (*labelError)(nil); errors.As(err, &le) {
				code = le.status
			}
			return nil, err
		}
		rv := Review{Project: c.project, Change: c.number, Revision: ps.revision, PatchSet: ps.number, Input: in, At: time.Now()}
		s.reviews = append(s.reviews, rv.clone())
		return s.review(c, ps, s.ci, in), nil
	})
	if err != nil {
		textError(w, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, reviewResult{Labels: in.Labels})
}

// find resolves a change id of the REST API. Callers hold mu.
func (s *Server) find(id string) (*change, bool) {
	if n, err := strconv.Atoi(id); err == nil {
		c, ok := s.changes[n]
		return c, ok
	}
	parts := strings.Split(id, "~")
	switch len(parts) {
	case 1: // Change-Id
		for _, n := range slices.Sorted(maps.Keys(s.changes)) {
			if c := s.changes[n]; c.changeID == id {
				return c, true
			}
		}
	case 2: // project~number
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return nil, false
		}
		if c, ok := s.changes[n]; ok && c.project == parts[0] {
			return c, true
		}
	case 3: // project~branch~Change-Id
		branch := strings.TrimPrefix(parts[1], "refs/heads/")
		for _, c := range s.changes {
			if c.project == parts[0] && c.branch == branch && c.changeID == parts[2] {
				return c, true
			}
		}
	}
	return nil, false
}

// revision resolves a revision id of the REST API as Gerrit does: "current";
// up to five digits without a leading zero name a patch set number; anything
// else is a sha or a unique prefix of one (at least 4 hex digits).
func (c *change) revision(rev string) (*patchSet, bool) {
	if rev == "current" {
		return c.current(), true
	}
	if len(rev) < 6 && rev != "" && rev[0] != '0' {
		if n, err := strconv.Atoi(rev); err == nil {
			return c.patchSet(n)
		}
	}
	if len(rev) < 4 || !isHex(rev) {
		return nil, false
	}
	rev = strings.ToLower(rev)
	var found *patchSet
	for _, ps := range c.patchSets {
		if strings.HasPrefix(ps.revision, rev) {
			if found != nil {
				return nil, false // ambiguous
			}
			found = ps
		}
	}
	return found, found != nil
}

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.opts.User))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.opts.Password))
	return u&p == 1
}

func (s *Server) allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || method == http.MethodGet && r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", method)
	textError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	return false
}

// segments splits an escaped path into unescaped segments, so that a
// project's %2F stays inside its segment. A trailing slash is ignored.
func segments(escaped string) ([]string, error) {
	escaped = strings.Trim(escaped, "/")
	if escaped == "" {
		return nil, nil
	}
	raw := strings.Split(escaped, "/")
	out := make([]string, len(raw))
	for i, seg := range raw {
		u, err := url.PathUnescape(seg)
		if err != nil {
			return nil, fmt.Errorf("bad path segment %q: %v", seg, err)
		}
		out[i] = u
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		textError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, magicPrefix)
	_, _ = w.Write(b)
	_, _ = io.WriteString(w, "\n")
}

// textError answers as Gerrit does on errors: plain text, no magic prefix.
func textError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// REST entities (Documentation/rest-api-changes.html, rest-api-accounts.html).

type accountInfoJSON struct {
	AccountID int    `json:"_account_id"`
	Name      string `json:"name,omitempty"`
	Email     string `json:"email,omitempty"`
	Username  string `json:"username,omitempty"`
}

func accountInfo(a Account) accountInfoJSON {
	return accountInfoJSON{AccountID: a.ID, Name: a.Name, Email: a.Email, Username: a.Username}
}

type changeInfo struct {
	ID                    string                  `json:"id"`
	TripletID             string                  `json:"triplet_id"`
	Project               string                  `json:"project"`
	Branch                string                  `json:"branch"`
	Topic                 string                  `json:"topic,omitempty"`
	ChangeID              string                  `json:"change_id"`
	Subject               string                  `json:"subject"`
	Status                string                  `json:"status"`
	Created               string                  `json:"created"`
	Updated               string                  `json:"updated"`
	Submitted             string                  `json:"submitted,omitempty"`
	Insertions            int                     `json:"insertions"`
	Deletions             int                     `json:"deletions"`
	Number                int                     `json:"_number"`
	Owner                 accountInfoJSON         `json:"owner"`
	WorkInProgress        bool                    `json:"work_in_progress,omitempty"`
	IsPrivate             bool                    `json:"is_private,omitempty"`
	HasReviewStarted      bool                    `json:"has_review_started,omitempty"`
	Labels                map[string]labelInfo    `json:"labels,omitempty"`
	PermittedLabels       map[string][]string     `json:"permitted_labels,omitempty"`
	Messages              []changeMessageInfo     `json:"messages,omitempty"`
	CurrentRevision       string                  `json:"current_revision"`
	CurrentRevisionNumber int                     `json:"current_revision_number"`
	Revisions             map[string]revisionInfo `json:"revisions,omitempty"`
}

type labelInfo struct {
	All          []approvalInfo    `json:"all,omitempty"`
	Values       map[string]string `json:"values,omitempty"`
	DefaultValue int               `json:"default_value"`
}

type approvalInfo struct {
	accountInfoJSON
	Value int    `json:"value"`
	Date  string `json:"date,omitempty"`
}

type changeMessageInfo struct {
	ID             string          `json:"id"`
	Tag            string          `json:"tag,omitempty"`
	Author         accountInfoJSON `json:"author"`
	Date           string          `json:"date"`
	Message        string          `json:"message"`
	RevisionNumber int             `json:"_revision_number"`
}

type revisionInfo struct {
	Kind     string               `json:"kind"`
	Number   int                  `json:"_number"`
	Created  string               `json:"created"`
	Uploader accountInfoJSON      `json:"uploader"`
	Ref      string               `json:"ref"`
	Fetch    map[string]fetchInfo `json:"fetch"`
}

type fetchInfo struct {
	URL string `json:"url"`
	Ref string `json:"ref"`
}

type fileInfo struct {
	Status        string `json:"status,omitempty"`
	LinesInserted int    `json:"lines_inserted,omitempty"`
	LinesDeleted  int    `json:"lines_deleted,omitempty"`
	SizeDelta     int    `json:"size_delta"`
	Size          int    `json:"size"`
}

type reviewResult struct {
	Labels map[string]int `json:"labels,omitempty"`
}

func restTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// changeInfo renders c as ChangeInfo with the options in opts (o=...).
// current_revision is always set, as if CURRENT_REVISION had been asked
// for. Callers hold mu.
func (s *Server) changeInfo(c *change, opts map[string]bool) changeInfo {
	cur := c.current()
	info := changeInfo{
		ID:                    url.PathEscape(c.project) + "~" + strconv.Itoa(c.number),
		TripletID:             url.PathEscape(c.project) + "~" + url.PathEscape(c.branch) + "~" + c.changeID,
		Project:               c.project,
		Branch:                c.branch,
		Topic:                 c.topic,
		ChangeID:              c.changeID,
		Subject:               c.subject,
		Status:                c.status,
		Created:               restTime(c.created),
		Updated:               restTime(c.updated),
		Insertions:            insertionsPerFile * len(cur.files),
		Deletions:             deletionsPerFile * len(cur.files),
		Number:                c.number,
		Owner:                 accountInfo(c.owner),
		WorkInProgress:        c.wip,
		IsPrivate:             c.private,
		HasReviewStarted:      !c.wip,
		CurrentRevision:       cur.revision,
		CurrentRevisionNumber: cur.number,
	}
	if c.status == StatusMerged {
		info.Submitted = restTime(c.updated)
	}
	if opts["LABELS"] || opts["DETAILED_LABELS"] {
		info.Labels = map[string]labelInfo{}
		info.PermittedLabels = map[string][]string{}
		for name, r := range s.opts.Labels {
			li := labelInfo{Values: map[string]string{}}
			var vals []string
			for v := r.Min; v <= r.Max; v++ {
				key := fmt.Sprintf("%+d", v)
				if v == 0 {
					key = " 0"
				}
				li.Values[key] = ""
				vals = append(vals, key)
			}
			if !c.closed() {
				info.PermittedLabels[name] = vals
			}
			votes := cur.approvals[name]
			for _, id := range slices.Sorted(maps.Keys(votes)) {
				v := votes[id]
				li.All = append(li.All, approvalInfo{accountInfoJSON: accountInfo(v.by), Value: v.value, Date: restTime(v.at)})
			}
			info.Labels[name] = li
		}
	}
	if opts["MESSAGES"] {
		for _, m := range c.messages {
			info.Messages = append(info.Messages, changeMessageInfo{
				ID: m.id, Tag: m.tag, Author: accountInfo(m.author), Date: restTime(m.at),
				Message: m.text, RevisionNumber: m.patchSet,
			})
		}
	}
	if opts["CURRENT_REVISION"] || opts["ALL_REVISIONS"] {
		info.Revisions = map[string]revisionInfo{}
		for _, ps := range c.patchSets {
			if ps != cur && !opts["ALL_REVISIONS"] {
				continue
			}
			info.Revisions[ps.revision] = revisionInfo{
				Kind: ps.kind, Number: ps.number, Created: restTime(ps.created),
				Uploader: accountInfo(ps.uploader), Ref: ps.ref,
				Fetch: map[string]fetchInfo{"http": {URL: s.canonical() + "/" + c.project, Ref: ps.ref}},
			}
		}
	}
	return info
}
