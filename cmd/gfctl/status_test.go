package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

const project = "platform/core"

// seedChange writes change 1234 of platform/core as the trigger, monitor and
// voter leave it: patch set 1 voted (and its vote replayed once), patch set 2
// building.
func seedChange(h *harness) (ps1, ps2 build.Set) {
	created := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	ps1 = build.Set{ID: build.SetID(1234, 1, "patchset-created.1234.1.1.a", ""), Project: project, Change: 1234, PatchSet: 1,
		Revision: strings.Repeat("a", 40), EventType: "patchset-created", State: build.SetSuperseded, Reason: "superseded by patch set 2",
		Jobs: []build.Job{{Name: "unit", JenkinsJob: "folder/unit", Voting: true}, {Name: "lint", JenkinsJob: "lint"}}, Created: created}
	ps2 = build.Set{ID: build.SetID(1234, 2, "patchset-created.1234.2.2.b", ""), Project: project, Change: 1234, PatchSet: 2,
		Revision: strings.Repeat("b", 40), EventType: "patchset-created", State: build.SetRunning,
		Jobs: []build.Job{{Name: "unit", JenkinsJob: "folder/unit", Voting: true}, {Name: "lint", JenkinsJob: "lint"}}, Created: created.Add(time.Hour)}
	h.put(streams.BucketChanges, subject.ChangeKey(project, 1234), build.Change{Project: project, Number: 1234, Latest: 2, Status: build.ChangeNew,
		BuildSets: []build.SetRef{{ID: ps1.ID, PatchSet: 1, Event: "patchset-created"}, {ID: ps2.ID, PatchSet: 2, Event: "patchset-created"}, {ID: "1234-1-gone", PatchSet: 1}},
		Updated:   created.Add(time.Hour)})
	h.put(streams.BucketBuildSets, ps1.ID, ps1)
	h.put(streams.BucketBuildSets, ps2.ID, ps2)
	h.put(streams.BucketBuilds, subject.BuildKey(ps1.ID, "unit"), build.Build{BuildSet: ps1.ID, Job: "unit", Voting: true, State: build.StateCompleted,
		Result: "SUCCESS", URL: "https://jenkins.example.com/job/folder/job/unit/7/", Duration: 90 * time.Second, Triggered: created})
	h.put(streams.BucketBuilds, subject.BuildKey(ps1.ID, "lint"), build.Build{BuildSet: ps1.ID, Job: "lint", State: build.StateCompleted,
		Result: "FAILURE", URL: "https://jenkins.example.com/job/lint/3/", Duration: 30 * time.Second, Triggered: created})
	h.put(streams.BucketBuilds, subject.BuildKey(ps2.ID, "unit"), build.Build{BuildSet: ps2.ID, Job: "unit", Voting: true, State: build.StateRunning,
		QueueID: 41, Number: 8, URL: "https://jenkins.example.com/job/folder/job/unit/8/", Triggered: created.Add(time.Hour)})
	h.put(streams.BucketVotes, ps1.ID, build.Vote{BuildSet: ps1.ID, Project: project, Change: 1234, PatchSet: 1, State: build.VotePosted,
		Labels: map[string]int{"Verified": 1}, Claimed: created.Add(5 * time.Minute), Posted: created.Add(5 * time.Minute)})
	h.put(streams.BucketVotes, ps1.ID+"."+subject.Token("r-1"), build.Vote{BuildSet: ps1.ID, Replay: "r-1", Project: project, Change: 1234, PatchSet: 1,
		State: build.VotePosted, Labels: map[string]int{"Verified": 1}, Claimed: created.Add(50 * time.Minute), Posted: created.Add(50 * time.Minute)})
	return ps1, ps2
}

func TestStatusJSON(t *testing.T) {
	h := newHarness(t)
	ps1, ps2 := seedChange(h)
	var v statusView
	h.runJSON(&v, "status", "1234")
	if v.Key != subject.ChangeKey(project, 1234) || v.Change.Latest != 2 || len(v.BuildSets) != 3 {
		t.Fatalf("status = key %q latest %d, %d build sets; want %s, 2, 3", v.Key, v.Change.Latest, len(v.BuildSets), subject.ChangeKey(project, 1234))
	}
	one, two, gone := v.BuildSets[0], v.BuildSets[1], v.BuildSets[2]
	if one.Set == nil || one.Set.ID != ps1.ID || len(one.Builds) != 2 || one.Builds[0].Result != "SUCCESS" || one.Builds[1].Result != "FAILURE" {
		t.Errorf("build set 1 = %+v; want %s with unit SUCCESS and lint FAILURE", one, ps1.ID)
	}
	if len(one.Votes) != 2 || one.Votes[0].Key != ps1.ID || one.Votes[1].Key != ps1.ID+".r-1" || one.Votes[1].Vote.Replay != "r-1" {
		t.Errorf("votes of build set 1 = %+v; want %s, then %s.r-1", one.Votes, ps1.ID, ps1.ID)
	}
	if two.Set == nil || two.Set.ID != ps2.ID || len(two.Builds) != 2 || two.Builds[0].State != build.StateRunning || two.Builds[1].State != "" || len(two.Votes) != 0 {
		t.Errorf("build set 2 = %+v; want unit running, lint not started, no vote", two)
	}
	if gone.Set != nil || gone.Ref.ID != "1234-1-gone" {
		t.Errorf("expired build set = %+v; want the ref and no record", gone)
	}

	// With --project: the same, found by its key.
	var again statusView
	h.runJSON(&again, "status", "1234", "--project", project)
	if again.Key != v.Key || len(again.BuildSets) != 3 {
		t.Errorf("status --project = %+v; want the same change", again)
	}
}

func TestStatusTable(t *testing.T) {
	h := newHarness(t)
	ps1, ps2 := seedChange(h)
	out, _, err := h.run("status", "1234")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^CHANGE\s+PROJECT\s+STATUS\s+LATEST PS\s+WIP\s+UPDATED$`,
		`(?m)^1234\s+platform/core\s+NEW\s+2\s+no\s+2026-03-01T11:00:00Z$`,
		`(?m)^` + ps1.ID + `\s+1\s+patchset-created\s+-\s+superseded \(superseded by patch set 2\)\s+2\s+2026-03-01T10:00:00Z$`,
		`(?m)^1234-1-gone\s+1\s+-\s+-\s+\(record expired\)`,
		`(?m)^` + ps1.ID + `\s+unit\s+completed\s+SUCCESS\s+1m30s\s+https://jenkins.example.com/job/folder/job/unit/7/$`,
		`(?m)^` + ps1.ID + `\s+lint \(non-voting\)\s+completed\s+FAILURE\s+30s\s+https://jenkins.example.com/job/lint/3/$`,
		`(?m)^` + ps2.ID + `\s+unit\s+running\s+-\s+-\s+https://jenkins.example.com/job/folder/job/unit/8/$`,
		`(?m)^` + ps2.ID + `\s+lint \(non-voting\)\s+\(not started\)`,
		`(?m)^` + ps1.ID + `\s+posted\s+Verified \+1\s+2026-03-01T10:05:00Z`,
		`(?m)^` + ps1.ID + `\.r-1\s+posted\s+Verified \+1\s+2026-03-01T10:50:00Z`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("gfctl status output does not match %s:\n%s", re, out)
		}
	}
	// Columns line up: every row of the builds table starts its JOB cell where the header does.
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !regexp.MustCompile(`^BUILD SET\s+JOB\s+STATE`).MatchString(l) {
			continue
		}
		col := strings.Index(l, "JOB")
		for _, row := range lines[i+1 : i+5] {
			if len(row) < col || row[col-2:col] != "  " || row[col] == ' ' {
				t.Errorf("row %q does not start a cell at column %d of the header %q", row, col, l)
			}
		}
	}
}

func TestStatusUnknownAndAmbiguousChange(t *testing.T) {
	h := newHarness(t)
	seedChange(h)
	_, _, err := h.run("status", "999")
	if err == nil || !strings.Contains(err.Error(), "change 999: unknown change") {
		t.Errorf("status 999 = %v; want an unknown change error", err)
	}
	if _, _, err := h.run("status", "1234", "--project", "other/repo"); err == nil || !strings.Contains(err.Error(), "unknown change") {
		t.Errorf("status 1234 --project other/repo = %v; want an unknown change error", err)
	}
	if _, _, err := h.run("status", "12x"); err == nil || !strings.Contains(err.Error(), "want a change number") {
		t.Errorf("status 12x = %v; want a usage error", err)
	}
	h.put(streams.BucketChanges, subject.ChangeKey("tools/a.b", 1234), build.Change{Project: "tools/a.b", Number: 1234, Status: build.ChangeNew})
	_, _, err = h.run("status", "1234")
	if err == nil || !strings.Contains(err.Error(), "platform/core, tools/a.b") || !strings.Contains(err.Error(), "--project") {
		t.Errorf("status 1234 in two projects = %v; want both named and --project asked for", err)
	}
	var v statusView
	h.runJSON(&v, "status", "1234", "--project", "tools/a.b")
	if v.Change.Project != "tools/a.b" {
		t.Errorf("status --project tools/a.b = %+v", v.Change)
	}
}

func TestBuildsInFlight(t *testing.T) {
	h := newHarness(t)
	_, ps2 := seedChange(h)
	h.now = time.Date(2026, 3, 1, 11, 30, 0, 0, time.UTC)
	queued := build.Build{BuildSet: "77-1-abc", Job: "unit", State: build.StateQueued, QueueID: 99, Triggered: h.now.Add(-10 * time.Minute)}
	h.put(streams.BucketBuilds, subject.BuildKey("77-1-abc", "unit"), queued)

	var rows []inFlight
	h.runJSON(&rows, "builds")
	if len(rows) != 2 {
		t.Fatalf("builds = %+v; want the 2 not completed", rows)
	}
	if rows[0].Key != subject.BuildKey(ps2.ID, "unit") || rows[0].AgeSeconds != 1800 || rows[1].Key != "77-1-abc.unit" || rows[1].AgeSeconds != 600 {
		t.Errorf("builds = %s (%vs), %s (%vs); want %s (1800s) then 77-1-abc.unit (600s)", rows[0].Key, rows[0].AgeSeconds, rows[1].Key, rows[1].AgeSeconds, subject.BuildKey(ps2.ID, "unit"))
	}
	out, _, err := h.run("builds")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^AGE\s+STATE\s+JOB\s+BUILD SET\s+CHANGE\s+QUEUE\s+NUMBER\s+URL$`,
		`(?m)^30m0s\s+running\s+unit\s+` + ps2.ID + `\s+1234\s+41\s+8\s+https://`,
		`(?m)^10m0s\s+queued\s+unit\s+77-1-abc\s+77\s+99\s+-\s+-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("gfctl builds output does not match %s:\n%s", re, out)
		}
	}
	if strings.Index(out, ps2.ID) > strings.Index(out, "77-1-abc") {
		t.Errorf("gfctl builds: want the oldest first:\n%s", out)
	}

	empty := newHarness(t)
	if out, _, err := empty.run("builds"); err != nil || out != "no builds in flight\n" {
		t.Errorf("builds on an empty bucket = %q, %v", out, err)
	}
}
