package event_test

import (
	"slices"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
)

var (
	jane = &event.Account{Name: "Jane Developer", Email: "jane@example.org", Username: "jdev"}
	ravi = &event.Account{Name: "Ravi Kumar", Email: "ravi.kumar@example.org", Username: "rkumar"}
)

func change(project, branch string, number int) *event.Change {
	return &event.Change{Project: project, Branch: branch, Number: event.Number(number), ID: "I8473b95934b5732ac55d26311a706c9c2bde9940"}
}

func patchSet(number int, rev, kind string) *event.PatchSet {
	return &event.PatchSet{Number: event.Number(number), Revision: rev, Kind: kind}
}

func refUpdated(project, ref string) *event.Event {
	return &event.Event{Type: event.TypeRefUpdated, Submitter: jane,
		RefUpdate: &event.RefUpdate{Project: project, RefName: ref, OldRev: "4f1e", NewRev: "e25f"}}
}

func TestKnown(t *testing.T) {
	for _, typ := range []string{
		"patchset-created", "comment-added", "change-merged", "change-abandoned", "change-restored",
		"change-deleted", "ref-updated", "wip-state-changed", "private-state-changed", "topic-changed",
		"hashtags-changed", "reviewer-added", "reviewer-deleted", "vote-deleted", "project-created",
	} {
		if e := (&event.Event{Type: typ}); !e.Known() {
			t.Errorf("Event{Type: %q}.Known() = false; want true", typ)
		}
	}
	for _, typ := range []string{"", "ref-replicated", "project-head-updated", "Patchset-Created", "patchset-created ", "draft-published"} {
		if e := (&event.Event{Type: typ}); e.Known() {
			t.Errorf("Event{Type: %q}.Known() = true; want false", typ)
		}
	}
	if got := len(event.KnownTypes()); got != 15 {
		t.Errorf("len(KnownTypes()) = %d; want 15", got)
	}
	types := event.KnownTypes()
	types[0] = "changed by the caller"
	if slices.Contains(event.KnownTypes(), "changed by the caller") {
		t.Error("KnownTypes returns its own slice; want a copy")
	}
}

func TestAccessors(t *testing.T) {
	tests := []struct {
		name                               string
		ev                                 *event.Event
		change, patchSet                   int
		project, branch, revision, account string // account: Account().Username
	}{
		{
			name:   "patchset-created",
			ev:     &event.Event{Type: event.TypePatchsetCreated, Change: change("platform/core", "main", 1234), PatchSet: patchSet(2, "b91c", "REWORK"), Uploader: jane},
			change: 1234, patchSet: 2, project: "platform/core", branch: "main", revision: "b91c", account: "jdev",
		},
		{
			name:   "comment-added acts as the author, not the uploader",
			ev:     &event.Event{Type: event.TypeCommentAdded, Change: change("p", "stable-3.9", 7), PatchSet: &event.PatchSet{Number: 1, Revision: "a2f6", Uploader: jane}, Author: ravi},
			change: 7, patchSet: 1, project: "p", branch: "stable-3.9", revision: "a2f6", account: "rkumar",
		},
		{
			name:   "change-merged: revision is the patch set's, not newRev",
			ev:     &event.Event{Type: event.TypeChangeMerged, Change: change("p", "main", 7), PatchSet: patchSet(3, "b91c", ""), NewRev: "e25f", Submitter: ravi},
			change: 7, patchSet: 3, project: "p", branch: "main", revision: "b91c", account: "rkumar",
		},
		{
			name:    "ref-updated, full ref name",
			ev:      refUpdated("platform/core", "refs/heads/release/1.x"),
			project: "platform/core", branch: "release/1.x", account: "jdev",
		},
		{
			name:    "ref-updated, short ref name of older Gerrit",
			ev:      refUpdated("platform/core", "master"),
			project: "platform/core", branch: "master", account: "jdev",
		},
		{
			name:    "ref-updated for a tag has no branch",
			ev:      refUpdated("platform/core", "refs/tags/v1.2.0"),
			project: "platform/core", branch: "", account: "jdev",
		},
		{
			name:    "ref-updated for a meta ref has no branch",
			ev:      refUpdated("platform/core", "refs/changes/34/1234/meta"),
			project: "platform/core", branch: "", account: "jdev",
		},
		{
			name:    "top-level project and refName only",
			ev:      &event.Event{Type: "some-plugin-event", Project: "tools/x", RefName: "refs/heads/dev"},
			project: "tools/x", branch: "dev",
		},
		{
			name:    "project-created",
			ev:      &event.Event{Type: event.TypeProjectCreated, CreatedProject: "platform/tools", HeadName: "refs/heads/main"},
			project: "platform/tools",
		},
		{
			name:   "change-abandoned",
			ev:     &event.Event{Type: event.TypeChangeAbandoned, Change: change("p", "main", 9), PatchSet: patchSet(1, "a", ""), Abandoner: ravi},
			change: 9, patchSet: 1, project: "p", branch: "main", revision: "a", account: "rkumar",
		},
		{
			name:   "change-restored",
			ev:     &event.Event{Type: event.TypeChangeRestored, Change: change("p", "main", 9), Restorer: jane},
			change: 9, project: "p", branch: "main", account: "jdev",
		},
		{
			name:   "change-deleted",
			ev:     &event.Event{Type: event.TypeChangeDeleted, Change: change("p", "main", 9), Deleter: ravi},
			change: 9, project: "p", branch: "main", account: "rkumar",
		},
		{
			name:   "wip-state-changed",
			ev:     &event.Event{Type: event.TypeWIPStateChanged, Change: change("p", "main", 9), Changer: jane, Uploader: ravi},
			change: 9, project: "p", branch: "main", account: "jdev",
		},
		{
			name:   "private-state-changed",
			ev:     &event.Event{Type: event.TypePrivateStateChanged, Change: change("p", "main", 9), Changer: ravi},
			change: 9, project: "p", branch: "main", account: "rkumar",
		},
		{
			name:   "topic-changed",
			ev:     &event.Event{Type: event.TypeTopicChanged, Change: change("p", "main", 9), Changer: jane},
			change: 9, project: "p", branch: "main", account: "jdev",
		},
		{
			name:   "hashtags-changed",
			ev:     &event.Event{Type: event.TypeHashtagsChanged, Change: change("p", "main", 9), Editor: ravi},
			change: 9, project: "p", branch: "main", account: "rkumar",
		},
		{
			name:   "reviewer-added acts as the adder",
			ev:     &event.Event{Type: event.TypeReviewerAdded, Change: change("p", "main", 9), Reviewer: ravi, Adder: jane},
			change: 9, project: "p", branch: "main", account: "jdev",
		},
		{
			name:   "reviewer-deleted acts as the remover",
			ev:     &event.Event{Type: event.TypeReviewerDeleted, Change: change("p", "main", 9), Reviewer: jane, Remover: ravi},
			change: 9, project: "p", branch: "main", account: "rkumar",
		},
		{
			name:   "vote-deleted acts as the remover",
			ev:     &event.Event{Type: event.TypeVoteDeleted, Change: change("p", "main", 9), Reviewer: ravi, Remover: jane},
			change: 9, project: "p", branch: "main", account: "jdev",
		},
		{
			name: "empty event",
			ev:   &event.Event{Type: "x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.ev
			if got := e.ChangeNumber(); got != tt.change {
				t.Errorf("ChangeNumber() = %d; want %d", got, tt.change)
			}
			if got := e.PatchSetNumber(); got != tt.patchSet {
				t.Errorf("PatchSetNumber() = %d; want %d", got, tt.patchSet)
			}
			if got := e.ProjectName(); got != tt.project {
				t.Errorf("ProjectName() = %q; want %q", got, tt.project)
			}
			if got := e.Branch(); got != tt.branch {
				t.Errorf("Branch() = %q; want %q", got, tt.branch)
			}
			if got := e.Revision(); got != tt.revision {
				t.Errorf("Revision() = %q; want %q", got, tt.revision)
			}
			var got string
			if a := e.Account(); a != nil {
				got = a.Username
			}
			if got != tt.account {
				t.Errorf("Account().Username = %q; want %q", got, tt.account)
			}
		})
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		kind                  string
		trivial, noCodeChange bool
	}{
		{"REWORK", false, false},
		{"TRIVIAL_REBASE", true, false},
		{"TRIVIAL_REBASE_WITH_MESSAGE_UPDATE", true, false},
		{"MERGE_FIRST_PARENT_UPDATE", false, false},
		{"NO_CODE_CHANGE", false, true},
		{"NO_CHANGE", false, true},
		{"", false, false},
		{"trivial_rebase", false, false},
	}
	for _, tt := range tests {
		e := &event.Event{Type: event.TypePatchsetCreated, PatchSet: patchSet(2, "b91c", tt.kind)}
		if got := e.Trivial(); got != tt.trivial {
			t.Errorf("kind %q: Trivial() = %v; want %v", tt.kind, got, tt.trivial)
		}
		if got := e.NoCodeChange(); got != tt.noCodeChange {
			t.Errorf("kind %q: NoCodeChange() = %v; want %v", tt.kind, got, tt.noCodeChange)
		}
	}
	e := &event.Event{Type: event.TypeChangeDeleted}
	if e.Trivial() || e.NoCodeChange() {
		t.Errorf("event without patch set: Trivial() = %v, NoCodeChange() = %v; want false, false", e.Trivial(), e.NoCodeChange())
	}
}

func TestIsMetaRef(t *testing.T) {
	tests := []struct {
		ev   *event.Event
		want bool
	}{
		{refUpdated("p", "refs/changes/34/1234/meta"), true},
		{refUpdated("p", "refs/changes/34/1234/2"), true},
		{refUpdated("p", "refs/changes/34/1234/robot-comments"), true},
		{refUpdated("All-Projects", "refs/sequences/changes"), true},
		{refUpdated("All-Users", "refs/users/00/1000000"), true},
		{refUpdated("All-Users", "refs/draft-comments/34/1234/1000000"), true},
		{refUpdated("All-Users", "refs/starred-changes/34/1234/1000000"), true},
		{refUpdated("All-Users", "refs/meta/external-ids"), true},
		{refUpdated("p", "refs/heads/main"), false},
		{refUpdated("p", "main"), false},
		{refUpdated("p", "refs/tags/v1.0"), false},
		{refUpdated("p", "refs/meta/config"), false},
		{refUpdated("p", "refs/heads/refs/changes/x"), false},
		{&event.Event{Type: event.TypeRefUpdated, RefName: "refs/changes/34/1234/meta"}, true},
		// Only ref-updated events are noise: a change event's refName is its branch.
		{&event.Event{Type: event.TypePatchsetCreated, RefName: "refs/changes/34/1234/meta"}, false},
	}
	for _, tt := range tests {
		ref := tt.ev.RefName
		if tt.ev.RefUpdate != nil {
			ref = tt.ev.RefUpdate.RefName
		}
		if got := tt.ev.IsMetaRef(); got != tt.want {
			t.Errorf("%s %s: IsMetaRef() = %v; want %v", tt.ev.Type, ref, got, tt.want)
		}
	}
}
