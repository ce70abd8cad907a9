// Package gerrit is gerritflow's adapter over go-gerrit: read a change, list a
// revision's files (trigger), post a review on an exact revision and look for
// a message already posted (voter). It owns the
// mapping from HTTP answers to error classes, so the handler never sees a
// status code:
//
//   - 409 (the change is closed) wraps ErrClosed and is permanent;
//   - 404 and other 4xx (no such change or revision, a label Gerrit refuses)
//     are permanent: redelivery cannot help;
//   - 401, 403, 408, 429, 5xx, timeouts and connection errors are transient:
//     plain wrapped errors, redelivered with backoff.
//
// Error strings name the operation and the object and never carry the password.
package gerrit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	gogerrit "github.com/andygrunwald/go-gerrit"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/stage"
)

// ErrClosed is the cause of a permanent error when Gerrit refuses a review
// because the change is merged or abandoned (409).
var ErrClosed = errors.New("change is closed")

// Change statuses Gerrit reports.
const (
	StatusNew       = "NEW"
	StatusMerged    = "MERGED"
	StatusAbandoned = "ABANDONED"
)

// Change is what the voter needs to know about a change before voting.
type Change struct {
	Status          string         // NEW, MERGED or ABANDONED
	CurrentRevision string         // sha of the current patch set
	Revisions       map[string]int // every patch set's sha -> its number
}

// Closed reports whether the change is merged or abandoned.
func (c Change) Closed() bool { return c.Status == StatusMerged || c.Status == StatusAbandoned }

// Review is one review to post: a message, labels (none for a comment), the
// tag that lets Gerrit's UI filter bot comments, and who to notify.
type Review struct {
	Message string
	Labels  map[string]int
	Tag     string
	Notify  string
}

// Client talks to one Gerrit as one user, with HTTP basic auth on /a/...
type Client struct {
	api *gogerrit.Client
}

// New returns a client of the Gerrit at baseURL authenticating as user. It
// makes no request: a Gerrit that is down at start must not stop the voter.
func New(ctx context.Context, baseURL, user string, password config.Secret, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("gerrit.url: %q is not a URL", baseURL)
	}
	if u.User != nil {
		return nil, errors.New("gerrit.url: must not hold credentials (use gerrit.user and gerrit.password_env)")
	}
	if user == "" {
		return nil, errors.New("gerrit.user: required")
	}
	api, err := gogerrit.NewClient(ctx, baseURL, hc)
	if err != nil {
		return nil, fmt.Errorf("gerrit client %s: %w", baseURL, err)
	}
	api.Authentication.SetBasicAuth(user, password.Reveal())
	return &Client{api: api}, nil
}

// changeID is Gerrit's "<project>~<number>" with the project path-escaped
// ("platform/core" becomes "platform%2Fcore"; a raw "/" would make another path).
func changeID(project string, number int) string {
	return url.PathEscape(project) + "~" + strconv.Itoa(number)
}

// Change reads the change's status, current revision and patch sets.
func (c *Client) Change(ctx context.Context, project string, number int) (Change, error) {
	info, resp, err := c.api.Changes.GetChange(ctx, changeID(project, number),
		&gogerrit.ChangeOptions{AdditionalFields: []string{"ALL_REVISIONS"}})
	if err != nil {
		return Change{}, classify(fmt.Sprintf("get change %s~%d", project, number), err, resp)
	}
	ch := Change{Status: info.Status, CurrentRevision: info.CurrentRevision, Revisions: make(map[string]int, len(info.Revisions))}
	for sha, r := range info.Revisions {
		ch.Revisions[sha] = r.Number
	}
	return ch, nil
}

// Review posts in on the patch set whose sha is revision (never "current").
func (c *Client) Review(ctx context.Context, project string, number int, revision string, in Review) error {
	if revision == "" || revision == "current" {
		return stage.Permanent(fmt.Errorf("post review %s~%d: revision %q: an exact sha is required", project, number, revision))
	}
	_, resp, err := c.api.Changes.SetReview(ctx, changeID(project, number), revision, &gogerrit.ReviewInput{
		Message: in.Message, Labels: in.Labels, Tag: in.Tag, Notify: in.Notify,
	})
	if err != nil {
		return classify(fmt.Sprintf("post review %s~%d rev %s", project, number, revision), err, resp)
	}
	return nil
}

// HasMessage reports whether a message of the change holds marker as one of
// its lines (Gerrit puts "Patch Set N: Label+1" in front of the text posted).
func (c *Client) HasMessage(ctx context.Context, project string, number int, marker string) (bool, error) {
	info, resp, err := c.api.Changes.GetChangeDetail(ctx, changeID(project, number), nil)
	if err != nil {
		return false, classify(fmt.Sprintf("read messages of %s~%d", project, number), err, resp)
	}
	for _, m := range info.Messages {
		for _, line := range strings.Split(m.Message, "\n") {
			if strings.TrimSpace(line) == marker {
				return true, nil
			}
		}
	}
	return false, nil
}

// Files lists the paths a revision changes, without Gerrit's magic files
// (/COMMIT_MSG, /MERGE_LIST, /PATCHSET_LEVEL).
func (c *Client) Files(ctx context.Context, project string, number int, revision string) ([]string, error) {
	files, resp, err := c.api.Changes.ListFiles(ctx, changeID(project, number), revision, nil)
	if err != nil {
		return nil, classify(fmt.Sprintf("list files of %s~%d rev %s", project, number, revision), err, resp)
	}
	out := make([]string, 0, len(files))
	for path := range files {
		if !strings.HasPrefix(path, "/") {
			out = append(out, path)
		}
	}
	sort.Strings(out)
	return out, nil
}

// classify names op in err (from a call that got resp, possibly nil) and
// gives it the class the stage loop acts on. Gerrit's plain-text answer, if
// any, is added: it says why ("change is closed", "label ... is restricted").
func classify(op string, err error, resp *gogerrit.Response) error {
	if resp == nil || resp.Response == nil {
		return fmt.Errorf("%s: %w", op, err) // connection error, timeout, cancelled: transient
	}
	if resp.Body != nil { // go-gerrit leaves the body of an error answer open
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if why := strings.TrimSpace(string(b)); why != "" && resp.StatusCode >= 300 && utf8.ValidString(why) {
			err = fmt.Errorf("%w: %s", err, why)
		}
	}
	err = fmt.Errorf("%s: %w", op, err)
	switch code := resp.StatusCode; {
	case code == http.StatusConflict:
		return stage.Permanent(fmt.Errorf("%w (%w)", err, ErrClosed))
	case code >= 200 && code < 300:
		return err // an answer we could not decode (a proxy's page, say): transient
	case code == http.StatusUnauthorized, code == http.StatusForbidden, // credentials may be fixed
		code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return err
	default: // 404, 400 (a label Gerrit refuses), 422, ...
		return stage.Permanent(err)
	}
}
