package trigger

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
)

// Job is a configured job with its patterns compiled.
type Job struct {
	config.Job
	projects, branches, topics, files config.Patterns
	comments                          []*regexp.Regexp // per event rule; nil where the rule has none
}

// Compile prepares validated job configs for matching.
func Compile(jobs []config.Job) ([]Job, error) {
	out := make([]Job, 0, len(jobs))
	for _, j := range jobs {
		c := Job{Job: j}
		var err error
		if c.projects, err = config.CompilePatterns(j.Projects); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
		if c.branches, err = config.CompilePatterns(j.Branches); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
		if c.topics, err = config.CompilePatterns(j.Topics); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
		if c.files, err = config.CompilePatterns(j.Files); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
		for _, r := range j.Events {
			var re *regexp.Regexp
			if r.Comment != "" {
				if re, err = regexp.Compile(r.Comment); err != nil {
					return nil, fmt.Errorf("job %s: comment %q: %w", j.Name, r.Comment, err)
				}
			}
			c.comments = append(c.comments, re)
		}
		out = append(out, c)
	}
	return out, nil
}

// Match decides whether ev asks for job j. When it does not, reason says why
// (for the one log line per decision).
func Match(j Job, ev *event.Event) (ok bool, reason string) {
	if !j.projects.Match(ev.ProjectName()) {
		return false, "project not configured"
	}
	if len(j.branches) > 0 && !j.branches.Match(ev.Branch()) {
		return false, "branch not configured"
	}
	if len(j.topics) > 0 && (ev.Change == nil || !j.topics.Match(ev.Change.Topic)) {
		return false, "topic not configured"
	}
	reason = "event type not configured"
	for i, r := range j.Events {
		if r.Type != ev.Type {
			continue
		}
		if ok, why := matchRule(r, j.comments[i], ev); ok {
			return true, ""
		} else {
			reason = why
		}
	}
	return false, reason
}

func matchRule(r config.EventRule, comment *regexp.Regexp, ev *event.Event) (bool, string) {
	switch {
	case ev.Type == event.TypeRefUpdated && ev.IsMetaRef():
		return false, "internal ref"
	case r.ExcludeTrivialRebase && ev.Trivial():
		return false, "trivial rebase"
	case r.ExcludeNoCodeChange && ev.NoCodeChange():
		return false, "no code change"
	case r.ExcludeWIP && ev.Change != nil && ev.Change.WIP:
		return false, "work in progress"
	case r.ExcludePrivate && ev.Change != nil && ev.Change.Private:
		return false, "private change"
	}
	if comment != nil && !matchComment(comment, ev.Comment) {
		return false, "comment does not match"
	}
	if len(r.Approvals) > 0 && !matchApprovals(r.Approvals, ev.Approvals) {
		return false, "approvals do not match"
	}
	return true, ""
}

// matchComment matches the whole comment and each of its lines: Gerrit sends
// "Patch Set 2:\n\nrecheck", and a pattern anchored with ^...$ without (?m)
// must still find "recheck".
func matchComment(re *regexp.Regexp, comment string) bool {
	if re.MatchString(comment) {
		return true
	}
	for _, line := range strings.Split(comment, "\n") {
		if re.MatchString(strings.TrimRight(line, "\r")) {
			return true
		}
	}
	return false
}

// matchApprovals holds when every configured label is at least its minimum and
// at least one of them changed with this comment (Gerrit repeats standing
// votes on every comment; only a new vote starts a gate job).
func matchApprovals(want map[string]int, got []event.Approval) bool {
	changed := false
	for label, min := range want {
		found := false
		for _, a := range got {
			if a.Type != label {
				continue
			}
			if int(a.Value) < min {
				return false
			}
			found = true
			if a.OldValue != nil && *a.OldValue != a.Value {
				changed = true
			}
		}
		if !found {
			return false
		}
	}
	return changed
}

// NeedsFiles reports whether j only runs for changes touching some paths.
func (j Job) NeedsFiles() bool { return len(j.files) > 0 }

// MatchFiles reports whether any changed path matches the job's file patterns.
func MatchFiles(j Job, files []string) bool {
	for _, f := range files {
		if j.files.Match(f) {
			return true
		}
	}
	return false
}

// Params returns the Jenkins parameters the Gerrit Trigger plugin passes for
// ev, the job's constants and GERRITFLOW_BUILD_ID, so existing jobs run unchanged.
// gerritURL is the Gerrit web URL (for GERRIT_HOST, GERRIT_SCHEME, GERRIT_PORT).
func Params(j Job, ev *event.Event, buildID, gerritURL string) map[string]string {
	p := map[string]string{
		"GERRITFLOW_BUILD_ID": buildID,
		"GERRIT_EVENT_TYPE":   ev.Type,
		"GERRIT_PROJECT":      ev.ProjectName(),
		"GERRIT_BRANCH":       ev.Branch(),
	}
	if u, err := url.Parse(gerritURL); err == nil && u.Host != "" {
		p["GERRIT_HOST"] = u.Hostname()
		p["GERRIT_SCHEME"] = u.Scheme
		p["GERRIT_NAME"] = u.Hostname()
		if port := u.Port(); port != "" {
			p["GERRIT_PORT"] = port
		}
	}
	if ev.EventCreatedOn > 0 {
		p["GERRIT_EVENT_HASH"] = strconv.FormatInt(ev.EventCreatedOn, 10)
	}
	setAccount(p, "GERRIT_EVENT_ACCOUNT", ev.Account())
	if c := ev.Change; c != nil {
		p["GERRIT_CHANGE_NUMBER"] = strconv.Itoa(int(c.Number))
		p["GERRIT_CHANGE_ID"] = c.ID
		p["GERRIT_CHANGE_SUBJECT"] = c.Subject
		p["GERRIT_CHANGE_URL"] = c.URL
		p["GERRIT_CHANGE_COMMIT_MESSAGE"] = base64.StdEncoding.EncodeToString([]byte(c.CommitMessage))
		p["GERRIT_CHANGE_WIP_STATE"] = strconv.FormatBool(c.WIP)
		p["GERRIT_CHANGE_PRIVATE_STATE"] = strconv.FormatBool(c.Private)
		if c.Topic != "" {
			p["GERRIT_TOPIC"] = c.Topic
		}
		setAccount(p, "GERRIT_CHANGE_OWNER", c.Owner)
	}
	if ps := ev.PatchSet; ps != nil {
		p["GERRIT_PATCHSET_NUMBER"] = strconv.Itoa(int(ps.Number))
		p["GERRIT_PATCHSET_REVISION"] = ps.Revision
		p["GERRIT_REFSPEC"] = refspec(ev)
		setAccount(p, "GERRIT_PATCHSET_UPLOADER", ps.Uploader)
	}
	switch ev.Type {
	case event.TypeCommentAdded:
		p["GERRIT_EVENT_COMMENT_TEXT"] = base64.StdEncoding.EncodeToString([]byte(ev.Comment))
	case event.TypeChangeMerged:
		p["GERRIT_NEWREV"] = ev.NewRev
	case event.TypeRefUpdated:
		if r := ev.RefUpdate; r != nil {
			p["GERRIT_REFNAME"] = r.RefName
			p["GERRIT_OLDREV"] = r.OldRev
			p["GERRIT_NEWREV"] = r.NewRev
		}
	}
	for k, v := range j.Parameters {
		p[k] = v
	}
	return p
}

// refspec is the patch set's ref, refs/changes/NN/N/P, computed when Gerrit left it out.
func refspec(ev *event.Event) string {
	if ev.PatchSet.Ref != "" {
		return ev.PatchSet.Ref
	}
	n := ev.ChangeNumber()
	return fmt.Sprintf("refs/changes/%02d/%d/%d", n%100, n, ev.PatchSetNumber())
}

// setAccount writes NAME ("\"Name\" <email>"), NAME_NAME, NAME_EMAIL and
// NAME_USERNAME as the plugin does.
func setAccount(p map[string]string, prefix string, a *event.Account) {
	if a == nil {
		return
	}
	p[prefix] = fmt.Sprintf("%q <%s>", a.Name, a.Email)
	p[prefix+"_NAME"] = a.Name
	p[prefix+"_EMAIL"] = a.Email
	if a.Username != "" {
		p[prefix+"_USERNAME"] = a.Username
	}
}

// Supersedes reports whether a new patch set latest makes a build set of
// patch set ps obsolete.
func Supersedes(latest, ps int) bool { return ps > 0 && latest > ps }
