package jenkinssim

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	classJob   = "hudson.model.FreeStyleProject"
	classBuild = "hudson.model.FreeStyleBuild"
)

func ms(t time.Time) int64            { return t.UnixMilli() }
func msd(d time.Duration) int64       { return d.Milliseconds() }
func displayPath(p string) string     { return strings.ReplaceAll(p, "/", " » ") }
func folderURL(base, p string) string { return jobURLPath(base, p) }

func jobURLPath(base, p string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, n := range splitPath(p) {
		b.WriteString("/job/")
		b.WriteString(url.PathEscape(n))
	}
	b.WriteString("/")
	return b.String()
}

func jobURL(base string, j *job) string { return jobURLPath(base, j.path) }

func buildURL(base string, j *job, n int) string {
	return jobURL(base, j) + strconv.Itoa(n) + "/"
}

// color is the ball colour of the job's last build ("_anime" while building).
func (j *job) color(now time.Time) string {
	if len(j.builds) == 0 {
		return "notbuilt"
	}
	last := j.builds[len(j.builds)-1]
	done := j.last(now, permalinks["lastCompletedBuild"])
	c := "notbuilt"
	if done != nil {
		switch done.resultAt(now) {
		case "SUCCESS":
			c = "blue"
		case "FAILURE":
			c = "red"
		case "UNSTABLE":
			c = "yellow"
		case "ABORTED":
			c = "aborted"
		}
	}
	if last.buildingAt(now) {
		c += "_anime"
	}
	return c
}

func (s *Server) childRefs(f *folder, base string, now time.Time) []any {
	names := make([]string, 0, len(f.children))
	for n := range f.children {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]any, 0, len(names))
	for _, n := range names {
		switch c := f.children[n].(type) {
		case *folder:
			out = append(out, map[string]any{"_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": n, "url": folderURL(base, c.path)})
		case *job:
			out = append(out, jobRef(c, base, now))
		}
	}
	return out
}

func jobRef(j *job, base string, now time.Time) map[string]any {
	return map[string]any{"_class": classJob, "name": j.name, "url": jobURL(base, j), "color": j.color(now)}
}

func buildRef(b *build, base string) map[string]any {
	return map[string]any{"_class": classBuild, "number": b.number, "url": buildURL(base, b.job, b.number)}
}

func paramsAction(ps []param) map[string]any {
	vals := make([]any, 0, len(ps))
	for _, p := range ps {
		vals = append(vals, map[string]any{"_class": "hudson.model.StringParameterValue", "name": p.name, "value": p.value})
	}
	return map[string]any{"_class": "hudson.model.ParametersAction", "parameters": vals}
}

func (s *Server) causeAction() map[string]any {
	return map[string]any{"_class": "hudson.model.CauseAction", "causes": []any{map[string]any{
		"_class":           "hudson.model.Cause$UserIdCause",
		"shortDescription": "Started by user " + s.opts.User,
		"userId":           s.opts.User,
		"userName":         s.opts.User,
	}}}
}

func (s *Server) actions(it *item) []any {
	var acts []any
	if len(it.job.params) > 0 || len(it.params) > 0 {
		acts = append(acts, paramsAction(it.params))
	}
	return append(acts, s.causeAction())
}

// itemDoc renders a queue item: a WaitingItem, or a LeftItem with executable
// or cancelled. Callers hold s.mu.
func (s *Server) itemDoc(it *item, base string, now time.Time) map[string]any {
	var ps strings.Builder
	for _, p := range it.params {
		ps.WriteString("\n" + p.name + "=" + p.value)
	}
	doc := map[string]any{
		"actions":      s.actions(it),
		"blocked":      false,
		"buildable":    false,
		"id":           it.id,
		"inQueueSince": ms(it.queuedAt),
		"params":       ps.String(),
		"stuck":        false,
		"task":         jobRef(it.job, base, now),
		"url":          fmt.Sprintf("queue/item/%d/", it.id),
	}
	switch it.state {
	case stateWaiting:
		doc["_class"] = "hudson.model.Queue$WaitingItem"
		doc["timestamp"] = ms(it.startAt)
		doc["why"] = "In the quiet period. Expires in " + timeSpan(it.startAt.Sub(now))
	default:
		doc["_class"] = "hudson.model.Queue$LeftItem"
		doc["why"] = nil
		doc["cancelled"] = it.state == stateCancelled
		if it.build != nil {
			doc["executable"] = buildRef(it.build, base)
		} else {
			doc["executable"] = nil
		}
	}
	return doc
}

// timeSpan approximates hudson.Util.getTimeSpanString.
func timeSpan(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", max(d.Milliseconds(), 0))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f sec", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%d sec", int(d.Seconds()))
	}
	return fmt.Sprintf("%d min %d sec", int(d.Minutes()), int(d.Seconds())%60)
}

// buildDoc renders a build. Callers hold s.mu.
func (s *Server) buildDoc(b *build, base string, now time.Time) map[string]any {
	var result any
	if r := b.resultAt(now); r != "" {
		result = r
	}
	building := b.buildingAt(now)
	var executor any
	if building {
		executor = map[string]any{"_class": "hudson.model.Executor"}
	}
	return map[string]any{
		"_class":            classBuild,
		"actions":           s.actions(b.item),
		"artifacts":         []any{},
		"building":          building,
		"builtOn":           "",
		"changeSet":         map[string]any{"_class": "hudson.scm.EmptyChangeLogSet", "items": []any{}, "kind": nil},
		"culprits":          []any{},
		"description":       nil,
		"displayName":       "#" + strconv.Itoa(b.number),
		"duration":          msd(b.durationAt(now)),
		"estimatedDuration": msd(b.job.estimateBefore(b, now)),
		"executor":          executor,
		"fullDisplayName":   fmt.Sprintf("%s #%d", displayPath(b.job.path), b.number),
		"id":                strconv.Itoa(b.number),
		"inProgress":        building,
		"keepLog":           false,
		"number":            b.number,
		"queueId":           b.item.id,
		"result":            result,
		"timestamp":         ms(b.start),
		"url":               buildURL(base, b.job, b.number),
	}
}

// estimateBefore is the estimate Jenkins shows for b: scripted, or computed
// from the builds before it.
func (j *job) estimateBefore(b *build, now time.Time) time.Duration {
	if b.item.out.EstimatedDuration != 0 {
		return b.item.out.EstimatedDuration
	}
	prev := &job{builds: j.builds[:b.number-1]}
	return prev.estimate(now, 0)
}

func (s *Server) paramDefs(j *job) []any {
	defs := make([]any, 0, len(j.params))
	for _, n := range j.params {
		defs = append(defs, map[string]any{
			"_class":                "hudson.model.StringParameterDefinition",
			"defaultParameterValue": map[string]any{"_class": "hudson.model.StringParameterValue", "name": n, "value": ""},
			"description":           "",
			"name":                  n,
			"type":                  "StringParameterDefinition",
			"trim":                  false,
		})
	}
	return defs
}

// jobDoc renders a job. With a tree, nested builds and queue items are full
// documents (the tree filter then keeps what was asked for); without, builds
// are {number,url} references as at depth 0. Callers hold s.mu.
func (s *Server) jobDoc(j *job, base string, now time.Time, tree *treeNode) map[string]any {
	deep := tree != nil
	ref := func(b *build) any {
		switch {
		case b == nil:
			return nil
		case deep:
			return s.buildDoc(b, base, now)
		}
		return buildRef(b, base)
	}
	builds := make([]any, 0, min(len(j.builds), 100))
	for i := len(j.builds) - 1; i >= 0 && len(builds) < 100; i-- {
		builds = append(builds, ref(j.builds[i]))
	}
	var first *build
	if len(j.builds) > 0 {
		first = j.builds[0]
	}
	var queueItem any
	waiting := j.waitingSorted()
	if len(waiting) > 0 {
		queueItem = s.itemDoc(waiting[0], base, now)
	}
	actions := []any{map[string]any{}}
	property := []any{}
	if len(j.params) > 0 {
		pdp := map[string]any{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": s.paramDefs(j)}
		actions = append([]any{pdp}, actions...)
		property = append(property, pdp)
	}
	doc := map[string]any{
		"_class":                classJob,
		"actions":               actions,
		"description":           "",
		"displayName":           j.name,
		"displayNameOrNull":     nil,
		"fullDisplayName":       displayPath(j.path),
		"fullName":              j.path,
		"name":                  j.name,
		"url":                   jobURL(base, j),
		"buildable":             true,
		"builds":                builds,
		"color":                 j.color(now),
		"firstBuild":            ref(first),
		"healthReport":          []any{},
		"inQueue":               len(waiting) > 0,
		"keepDependencies":      false,
		"lastBuild":             ref(j.last(now, permalinks["lastBuild"])),
		"lastCompletedBuild":    ref(j.last(now, permalinks["lastCompletedBuild"])),
		"lastFailedBuild":       ref(j.last(now, permalinks["lastFailedBuild"])),
		"lastStableBuild":       ref(j.last(now, permalinks["lastStableBuild"])),
		"lastSuccessfulBuild":   ref(j.last(now, permalinks["lastSuccessfulBuild"])),
		"lastUnstableBuild":     ref(j.last(now, permalinks["lastUnstableBuild"])),
		"lastUnsuccessfulBuild": ref(j.last(now, permalinks["lastUnsuccessfulBuild"])),
		"nextBuildNumber":       j.nextNumber,
		"property":              property,
		"queueItem":             queueItem,
		"concurrentBuild":       true,
		"disabled":              false,
		"downstreamProjects":    []any{},
		"labelExpression":       nil,
		"scm":                   map[string]any{"_class": "hudson.scm.NullSCM"},
		"upstreamProjects":      []any{},
	}
	if deep && tree.wants("allBuilds") {
		all := make([]any, 0, len(j.builds))
		for i := len(j.builds) - 1; i >= 0; i-- {
			all = append(all, ref(j.builds[i]))
		}
		doc["allBuilds"] = all
	}
	return doc
}
