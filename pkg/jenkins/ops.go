package jenkins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/pkg/stage"
)

// BuildIDParam is the parameter that carries gerritflow's build id; every job
// gerritflow starts must declare it.
const BuildIDParam = "GERRITFLOW_BUILD_ID"

// QueueItem is a Jenkins queue item: waiting, or left (BuildNumber > 0 once
// its build started, Cancelled if it was cancelled).
type QueueItem struct {
	ID          int64
	Why         string
	Blocked     bool
	Cancelled   bool
	BuildNumber int64
	BuildURL    string
	Params      map[string]string
}

// Build is a started or finished build. Result is "" while Building.
type Build struct {
	Job               string
	Number            int64
	URL               string
	Building          bool
	Result            string
	Duration          time.Duration // 0 while building
	EstimatedDuration time.Duration // 0 when Jenkins has no estimate
	QueueID           int64
	Params            map[string]string
	Timestamp         time.Time // start
}

// Ref points at what FindByBuildID found: a waiting queue item (Number 0) or a build.
type Ref struct {
	QueueID int64
	Number  int64
	URL     string
}

type paramsJSON struct {
	Actions []struct {
		Parameters []struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		} `json:"parameters"`
	} `json:"actions"`
}

func (p paramsJSON) params() map[string]string {
	m := map[string]string{}
	for _, a := range p.Actions {
		for _, kv := range a.Parameters {
			switch v := kv.Value.(type) {
			case string:
				m[kv.Name] = v
			case nil:
				m[kv.Name] = ""
			default:
				m[kv.Name] = fmt.Sprint(v)
			}
		}
	}
	return m
}

// Build asks Jenkins to build job with params and returns the queue item id from
// the Location header: a new item (201), or the existing item when an identical
// request is still waiting (303; nothing new is queued). Parameters the job does
// not declare are dropped by Jenkins.
func (c *Client) Build(ctx context.Context, job string, params map[string]string) (int64, error) {
	path, err := jobPath(job)
	if err != nil {
		return 0, fmt.Errorf("jenkins build %s: %w", job, err)
	}
	form := url.Values{}
	for k, v := range params {
		form.Set(k, v)
	}
	res, err := c.do(ctx, path+"/buildWithParameters", nil, form)
	if err != nil {
		return 0, fmt.Errorf("jenkins build %s: %w", job, err)
	}
	switch {
	case res.code == http.StatusCreated || res.code == http.StatusSeeOther:
		id, err := queueIDFromLocation(res.location)
		if err != nil {
			return 0, stage.Permanent(fmt.Errorf("jenkins build %s: %w", job, err))
		}
		return id, nil
	case res.code == http.StatusFound:
		// sendRedirect("."): Jenkins declined to schedule (e.g. a QueueDecisionHandler).
		return 0, stage.Permanent(fmt.Errorf("jenkins build %s: not scheduled (redirected to %s)", job, res.location))
	case res.code == http.StatusInternalServerError && strings.Contains(res.body, "not parameterized"):
		return 0, stage.Permanent(fmt.Errorf("jenkins build %s: job declares no parameters", job))
	}
	return 0, fmt.Errorf("jenkins build %s: %w", job, statusError(res.code))
}

// JobParameters returns the names of the parameters job declares.
func (c *Client) JobParameters(ctx context.Context, job string) ([]string, error) {
	path, err := jobPath(job)
	if err != nil {
		return nil, fmt.Errorf("jenkins job parameters %s: %w", job, err)
	}
	var doc struct {
		Property []struct {
			ParameterDefinitions []struct {
				Name string `json:"name"`
			} `json:"parameterDefinitions"`
		} `json:"property"`
	}
	if err := c.getJSON(ctx, path, map[string]string{"tree": "property[parameterDefinitions[name]]"}, &doc); err != nil {
		return nil, fmt.Errorf("jenkins job parameters %s: %w", job, err)
	}
	var names []string
	for _, p := range doc.Property {
		for _, d := range p.ParameterDefinitions {
			names = append(names, d.Name)
		}
	}
	return names, nil
}

// QueueItem reads queue item id. It wraps ErrNotFound (and is permanent) when
// Jenkins no longer remembers the item.
func (c *Client) QueueItem(ctx context.Context, id int64) (QueueItem, error) {
	var doc struct {
		ID         int64   `json:"id"`
		Why        *string `json:"why"`
		Blocked    bool    `json:"blocked"`
		Cancelled  bool    `json:"cancelled"`
		Executable *struct {
			Number int64  `json:"number"`
			URL    string `json:"url"`
		} `json:"executable"`
		paramsJSON
	}
	q := map[string]string{"tree": "id,why,blocked,cancelled,executable[number,url],actions[parameters[name,value]]"}
	if err := c.getJSON(ctx, "/queue/item/"+strconv.FormatInt(id, 10), q, &doc); err != nil {
		return QueueItem{}, fmt.Errorf("jenkins queue item %d: %w", id, err)
	}
	qi := QueueItem{ID: doc.ID, Blocked: doc.Blocked, Cancelled: doc.Cancelled, Params: doc.params()}
	if doc.Why != nil {
		qi.Why = *doc.Why
	}
	if doc.Executable != nil {
		qi.BuildNumber, qi.BuildURL = doc.Executable.Number, doc.Executable.URL
	}
	return qi, nil
}

// GetBuild reads build number of job. It wraps ErrNotFound (and is permanent)
// when the job or the build does not exist.
func (c *Client) GetBuild(ctx context.Context, job string, number int64) (Build, error) {
	path, err := jobPath(job)
	if err != nil {
		return Build{}, fmt.Errorf("jenkins get build %s #%d: %w", job, number, err)
	}
	var doc struct {
		Number            int64   `json:"number"`
		URL               string  `json:"url"`
		Building          bool    `json:"building"`
		Result            *string `json:"result"`
		Duration          float64 `json:"duration"`
		EstimatedDuration float64 `json:"estimatedDuration"`
		QueueID           int64   `json:"queueId"`
		Timestamp         int64   `json:"timestamp"`
		paramsJSON
	}
	q := map[string]string{"tree": "number,url,building,result,duration,estimatedDuration,queueId,timestamp,actions[parameters[name,value]]"}
	if err := c.getJSON(ctx, path+"/"+strconv.FormatInt(number, 10), q, &doc); err != nil {
		return Build{}, fmt.Errorf("jenkins get build %s #%d: %w", job, number, err)
	}
	b := Build{
		Job: job, Number: doc.Number, URL: doc.URL, Building: doc.Building,
		Duration: time.Duration(doc.Duration) * time.Millisecond,
		QueueID:  doc.QueueID, Params: doc.params(), Timestamp: time.UnixMilli(doc.Timestamp),
	}
	if doc.Result != nil {
		b.Result = *doc.Result
	}
	if doc.EstimatedDuration > 0 {
		b.EstimatedDuration = time.Duration(doc.EstimatedDuration) * time.Millisecond
	}
	return b, nil
}

// FindByBuildID looks for the item or build of job whose GERRITFLOW_BUILD_ID
// parameter is buildID: first in the queue, then in the job's builds, newest
// first (in that order, so an item that leaves the queue meanwhile is seen as
// a build). Jenkins lists a job's newest 100 builds; older ones are read from
// allBuilds, 500 at a time, down to the 5100th newest. A cancelled item, or a
// build older than that, is not found.
func (c *Client) FindByBuildID(ctx context.Context, job, buildID string) (Ref, bool, error) {
	path, err := jobPath(job)
	if err != nil {
		return Ref{}, false, fmt.Errorf("jenkins find %s %s: %w", job, buildID, err)
	}
	var queue struct {
		Items []struct {
			ID   int64 `json:"id"`
			Task struct {
				URL string `json:"url"`
			} `json:"task"`
			paramsJSON
		} `json:"items"`
	}
	if err := c.getJSON(ctx, "/queue", map[string]string{"tree": "items[id,task[name,url],actions[parameters[name,value]]]"}, &queue); err != nil {
		return Ref{}, false, fmt.Errorf("jenkins find %s %s: queue: %w", job, buildID, err)
	}
	for _, it := range queue.Items {
		if sameJob(it.Task.URL, path) && it.params()[BuildIDParam] == buildID {
			return Ref{QueueID: it.ID}, true, nil
		}
	}
	// The job's "builds" are its newest 100 at most: a busy job may have
	// started more since the build we look for (a trigger that crashed after
	// Jenkins accepted it and came back a minute later; a monitor that
	// follows a queue item Jenkins forgot). Then page back through
	// allBuilds, findPage builds at a time, down to findDepth builds.
	const fields = "number,url,queueId,actions[parameters[name,value]]"
	for from := 0; from < findDepth; {
		field, q := "builds", map[string]string{"tree": "builds[" + fields + "]"}
		n := newestBuilds
		if from > 0 {
			n = findPage
			field, q = "allBuilds", map[string]string{"tree": fmt.Sprintf("allBuilds[%s]{%d,%d}", fields, from, from+n)}
		}
		var page struct {
			Builds    []buildRefJSON `json:"builds"`
			AllBuilds []buildRefJSON `json:"allBuilds"`
		}
		if err := c.getJSON(ctx, path, q, &page); err != nil {
			return Ref{}, false, fmt.Errorf("jenkins find %s %s: %s: %w", job, buildID, field, err)
		}
		got := page.Builds
		if from > 0 {
			got = page.AllBuilds
		}
		for _, b := range got {
			if b.params()[BuildIDParam] == buildID {
				return Ref{QueueID: b.QueueID, Number: b.Number, URL: b.URL}, true, nil
			}
		}
		if len(got) < n { // that was the oldest build
			break
		}
		from += n
	}
	return Ref{}, false, nil
}

// FindByBuildID looks through the newest findDepth builds of a job: the
// newest 100 (the job's "builds"), then older ones findPage at a time
// (allBuilds{from,to}, which Jenkins loads lazily up to "to").
const (
	newestBuilds = 100
	findPage     = 500
	findDepth    = 5100
)

type buildRefJSON struct {
	Number  int64  `json:"number"`
	URL     string `json:"url"`
	QueueID int64  `json:"queueId"`
	paramsJSON
}

// sameJob reports whether a task URL (absolute, as Jenkins renders it with its
// configured root URL) points at the job with path "/job/a/job/b".
func sameJob(taskURL, path string) bool {
	u, err := url.Parse(taskURL)
	if err != nil {
		return false
	}
	want, err := url.PathUnescape(path)
	if err != nil {
		return false
	}
	return strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), want)
}

// CancelQueueItem removes item id from the queue. 204 (cancelled), 404 (unknown
// or forgotten) and 422 all mean the item is not waiting any more: nil. Jenkins
// answers 500 for an item that already left the queue but is remembered; then
// the item is read, and nil is returned if it left.
func (c *Client) CancelQueueItem(ctx context.Context, id int64) error {
	res, err := c.do(ctx, "/queue/cancelItem", url.Values{"id": {strconv.FormatInt(id, 10)}}, nil)
	if err != nil {
		return fmt.Errorf("jenkins cancel queue item %d: %w", id, err)
	}
	switch res.code {
	case http.StatusOK, http.StatusNoContent, http.StatusFound, http.StatusSeeOther, // 302/303: Jenkins < 2.x forwarded to the previous page
		http.StatusNotFound, http.StatusUnprocessableEntity:
		return nil
	case http.StatusInternalServerError:
		qi, err := c.QueueItem(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("jenkins cancel queue item %d: %w", id, err)
		case qi.Cancelled || qi.BuildNumber > 0:
			return nil
		}
	}
	return fmt.Errorf("jenkins cancel queue item %d: %w", id, statusError(res.code))
}

// StopBuild aborts build number of job (result ABORTED). Stopping a finished
// build is a no-op. It wraps ErrNotFound when the job or build does not exist.
func (c *Client) StopBuild(ctx context.Context, job string, number int64) error {
	path, err := jobPath(job)
	if err != nil {
		return fmt.Errorf("jenkins stop %s #%d: %w", job, number, err)
	}
	res, err := c.do(ctx, path+"/"+strconv.FormatInt(number, 10)+"/stop", nil, nil)
	if err != nil {
		return fmt.Errorf("jenkins stop %s #%d: %w", job, number, err)
	}
	switch res.code {
	case http.StatusOK, http.StatusFound, http.StatusSeeOther, http.StatusNoContent:
		return nil
	}
	return fmt.Errorf("jenkins stop %s #%d: %w", job, number, statusError(res.code))
}
