// Package jenkins is the thin adapter over gojenkins v1.2.0 that the trigger
// and the monitor share. It connects with gojenkins (Init) and reads through
// gojenkins' Requester, but checks every HTTP status itself and makes its POSTs
// (with the CSRF crumb flow) on its own client, because gojenkins v1.2.0:
//   - loses the status of failed reads (GetJob, GetQueueItem, Build.Poll turn a
//     404 HTML page into a JSON syntax error, or an empty 404 into success);
//   - BuildJob returns 0 and no error, queuing nothing, whenever ANY item of the
//     job is waiting (its IsQueued check), and its client follows the 303 of a
//     merged request, so the Location header is lost;
//   - Requester.Post fetches a crumb and dereferences a nil response when that
//     fetch fails at the transport level (panic while Jenkins is down);
//   - Task.Cancel reports false for Jenkins' 204, Build.Stop reports a JSON
//     error after a successful stop (it follows the 302 to an HTML page), and
//     GetBuildFromQueueID polls forever on a cancelled item.
//
// Errors. Every error names the operation and the object. Timeouts, connection
// errors, 408, 429 and 5xx are transient (plain wrapped errors: retry). A 404,
// 401, 403 and other 4xx are wrapped with stage.Permanent (no redelivery can
// fix them). A 404 also wraps ErrNotFound:
//   - QueueItem: ErrNotFound when Jenkins forgot the item (about 5 minutes after
//     it left the queue) or never had it; fall back to FindByBuildID;
//   - GetBuild, StopBuild: ErrNotFound when the job or the build does not exist;
//   - Build, JobParameters, FindByBuildID: ErrNotFound when the job does not exist;
//   - CancelQueueItem: never; 204, 404 and 422 all mean "not in the queue any more".
//
// The API token is sent as basic auth only; it never appears in errors.
package jenkins

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/bndr/gojenkins"

	"github.com/gerritflow/gerritflow/pkg/stage"
)

// ErrNotFound is wrapped by errors for a 404: a forgotten queue item, an unknown
// build or job.
var ErrNotFound = errors.New("jenkins: not found")

// StatusError is an unexpected HTTP status from Jenkins.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
}

// Client talks to one Jenkins controller. It is safe for concurrent use.
type Client struct {
	jk    *gojenkins.Jenkins
	base  string // no trailing slash
	user  string
	token string
	post  *http.Client // the caller's client, not following redirects

	mu    sync.Mutex
	crumb crumb
}

type crumb struct {
	field, value, cookie string
}

// initMu serializes gojenkins' Init, which (re)assigns package-level loggers.
var initMu sync.Mutex

// New connects to Jenkins at baseURL (gojenkins Init) with basic auth user and
// API token over hc (nil means http.DefaultClient). Wrong credentials give a
// permanent error; an unreachable or failing Jenkins a transient one.
func New(ctx context.Context, baseURL, user, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, stage.Permanent(fmt.Errorf("jenkins connect: invalid url %q", redact(baseURL)))
	}
	if u.User != nil {
		return nil, stage.Permanent(fmt.Errorf("jenkins connect %s: credentials belong in user and token, not in the url", u.Redacted()))
	}
	u.RawQuery, u.Fragment = "", ""
	base := strings.TrimRight(u.String(), "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	noRedirect := *hc
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	c := &Client{
		jk:    gojenkins.CreateJenkins(hc, base, user, token),
		base:  base,
		user:  user,
		token: token,
		post:  &noRedirect,
	}
	initMu.Lock()
	_, err = c.jk.Init(ctx)
	initMu.Unlock()
	if err != nil {
		// Init drops the status code; ask once more to classify the failure.
		var probe struct{}
		if perr := c.getJSON(ctx, "/", map[string]string{"tree": "mode"}, &probe); perr != nil {
			err = perr
		}
		return nil, fmt.Errorf("jenkins connect %s: %w", base, err)
	}
	return c, nil
}

// redact hides userinfo in a URL that did not parse.
func redact(s string) string {
	if i := strings.Index(s, "@"); i >= 0 {
		if j := strings.Index(s, "://"); j >= 0 && j < i {
			return s[:j+3] + "xxxxx" + s[i:]
		}
	}
	return s
}

// statusError classifies a non-success status.
func statusError(code int) error {
	se := &StatusError{Code: code}
	switch {
	case code == http.StatusNotFound:
		return stage.Permanent(fmt.Errorf("%w (%w)", ErrNotFound, se))
	case code == http.StatusUnauthorized:
		return stage.Permanent(fmt.Errorf("%w: check user and API token", se))
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests:
		return se
	case code >= 400 && code < 500:
		return stage.Permanent(se)
	}
	return se
}

// getJSON reads path/api/json through gojenkins' Requester and checks the status
// before trusting the decoded body.
func (c *Client) getJSON(ctx context.Context, path string, query map[string]string, v any) error {
	resp, err := c.jk.Requester.GetJSON(ctx, path, v, query)
	if resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(resp.StatusCode)
	}
	if err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

type postResult struct {
	code     int
	location string // resolved against the request URL
	body     string // the first bytes, for diagnostics
}

// do POSTs to path with basic auth. On 403 it fetches a CSRF crumb (bound to the
// session cookie the crumb issuer sets) and tries once more; a crumb is kept
// for later POSTs. Redirects are not followed.
func (c *Client) do(ctx context.Context, path string, query, form url.Values) (postResult, error) {
	for attempt := 0; ; attempt++ {
		u := c.base + path
		if len(query) > 0 {
			u += "?" + query.Encode()
		}
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
		if err != nil {
			return postResult{}, err
		}
		req.SetBasicAuth(c.user, c.token)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		c.mu.Lock()
		cr := c.crumb
		c.mu.Unlock()
		if cr.value != "" {
			req.Header.Set(cr.field, cr.value)
			if cr.cookie != "" && c.post.Jar == nil {
				req.Header.Set("Cookie", cr.cookie)
			}
		}
		resp, err := c.post.Do(req)
		if err != nil {
			return postResult{}, err
		}
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		res := postResult{code: resp.StatusCode, body: string(head)}
		if loc, err := resp.Location(); err == nil {
			res.location = loc.String()
		}
		if res.code == http.StatusForbidden && attempt == 0 {
			ok, err := c.refreshCrumb(ctx)
			if err != nil {
				return postResult{}, fmt.Errorf("crumb: %w", err)
			}
			if ok {
				continue
			}
		}
		return res, nil
	}
}

// refreshCrumb asks the crumb issuer for a new crumb; false if Jenkins has none.
func (c *Client) refreshCrumb(ctx context.Context) (bool, error) {
	var data struct {
		Crumb             string `json:"crumb"`
		CrumbRequestField string `json:"crumbRequestField"`
	}
	resp, err := c.jk.Requester.GetJSON(ctx, "/crumbIssuer", &data, nil)
	switch {
	case resp == nil:
		if err == nil {
			err = errors.New("no response")
		}
		return false, err
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, statusError(resp.StatusCode)
	case err != nil:
		return false, err
	case data.Crumb == "" || data.CrumbRequestField == "":
		return false, nil
	}
	var cookies []string
	for _, ck := range resp.Cookies() {
		cookies = append(cookies, ck.Name+"="+ck.Value)
	}
	c.mu.Lock()
	c.crumb = crumb{field: data.CrumbRequestField, value: data.Crumb, cookie: strings.Join(cookies, "; ")}
	c.mu.Unlock()
	return true, nil
}

// jobPath maps "a/b" to "/job/a/job/b".
func jobPath(job string) (string, error) {
	var b strings.Builder
	for _, n := range strings.Split(strings.Trim(job, "/"), "/") {
		if n == "" {
			return "", stage.Permanent(fmt.Errorf("invalid job name %q", job))
		}
		b.WriteString("/job/")
		b.WriteString(url.PathEscape(n))
	}
	return b.String(), nil
}

var queueItemPath = regexp.MustCompile(`/queue/item/(\d+)/?$`)

func queueIDFromLocation(loc string) (int64, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return 0, err
	}
	m := queueItemPath.FindStringSubmatch(u.Path)
	if m == nil {
		return 0, fmt.Errorf("location %q is not a queue item", loc)
	}
	return strconv.ParseInt(m[1], 10, 64)
}
