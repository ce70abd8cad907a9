// Package event is the model of Gerrit 3.x stream events: the types, Parse for
// one Kinesis record, and the semantic identity used as Nats-Msg-Id.
//
// The model is our own: go-gerrit's EventInfo cannot decode modern events.
// Field names are the JSON names Gerrit's Gson serializer writes (see
// com.google.gerrit.server.events and com.google.gerrit.server.data).
package event

import (
	"encoding/json"
	"slices"
	"strings"
)

// Event types Gerrit 3.x sends that this package models.
const (
	TypePatchsetCreated     = "patchset-created"
	TypeCommentAdded        = "comment-added"
	TypeChangeMerged        = "change-merged"
	TypeChangeAbandoned     = "change-abandoned"
	TypeChangeRestored      = "change-restored"
	TypeChangeDeleted       = "change-deleted"
	TypeRefUpdated          = "ref-updated"
	TypeWIPStateChanged     = "wip-state-changed"
	TypePrivateStateChanged = "private-state-changed"
	TypeTopicChanged        = "topic-changed"
	TypeHashtagsChanged     = "hashtags-changed"
	TypeReviewerAdded       = "reviewer-added"
	TypeReviewerDeleted     = "reviewer-deleted"
	TypeVoteDeleted         = "vote-deleted"
	TypeProjectCreated      = "project-created"
)

// Patch-set kinds (patchSet.kind, Gerrit's ChangeKind).
const (
	KindRework                         = "REWORK"
	KindTrivialRebase                  = "TRIVIAL_REBASE"
	KindTrivialRebaseWithMessageUpdate = "TRIVIAL_REBASE_WITH_MESSAGE_UPDATE"
	KindMergeFirstParentUpdate         = "MERGE_FIRST_PARENT_UPDATE"
	KindNoCodeChange                   = "NO_CODE_CHANGE"
	KindNoChange                       = "NO_CHANGE"
)

// Account is Gerrit's AccountAttribute.
type Account struct {
	Name        string `json:"name,omitempty"`
	Email       string `json:"email,omitempty"`
	Username    string `json:"username,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
	AccountID   Number `json:"accountId,omitempty"`
}

// Change is Gerrit's ChangeAttribute as sent in events.
type Change struct {
	Project              string   `json:"project,omitempty"`
	Branch               string   `json:"branch,omitempty"`
	ID                   string   `json:"id,omitempty"` // the Change-Id, "I" + 40 hex
	Number               Number   `json:"number,omitempty"`
	Topic                string   `json:"topic,omitempty"`
	Subject              string   `json:"subject,omitempty"`
	Owner                *Account `json:"owner,omitempty"`
	Assignee             *Account `json:"assignee,omitempty"`
	URL                  string   `json:"url,omitempty"`
	CommitMessage        string   `json:"commitMessage,omitempty"`
	Hashtags             []string `json:"hashtags,omitempty"`
	CherryPickOfChange   Number   `json:"cherryPickOfChange,omitempty"`
	CherryPickOfPatchSet Number   `json:"cherryPickOfPatchSet,omitempty"`
	CreatedOn            int64    `json:"createdOn,omitempty"`
	LastUpdated          int64    `json:"lastUpdated,omitempty"`
	Status               string   `json:"status,omitempty"` // NEW, MERGED, ABANDONED
	WIP                  bool     `json:"wip,omitempty"`
	Private              bool     `json:"private,omitempty"`
}

// PatchSet is Gerrit's PatchSetAttribute as sent in events.
type PatchSet struct {
	Number         Number   `json:"number,omitempty"`
	Revision       string   `json:"revision,omitempty"`
	Parents        []string `json:"parents,omitempty"`
	Ref            string   `json:"ref,omitempty"`
	Uploader       *Account `json:"uploader,omitempty"`
	Author         *Account `json:"author,omitempty"`
	CreatedOn      int64    `json:"createdOn,omitempty"`
	Kind           string   `json:"kind,omitempty"` // one of the Kind constants
	SizeInsertions int      `json:"sizeInsertions,omitempty"`
	SizeDeletions  int      `json:"sizeDeletions,omitempty"`
}

// Approval is Gerrit's ApprovalAttribute. OldValue is set only when the vote changed.
type Approval struct {
	Type        string   `json:"type,omitempty"` // label name, e.g. "Code-Review"
	Description string   `json:"description,omitempty"`
	Value       Value    `json:"value"`
	OldValue    *Value   `json:"oldValue,omitempty"`
	GrantedOn   int64    `json:"grantedOn,omitempty"`
	By          *Account `json:"by,omitempty"`
}

// RefUpdate is Gerrit's RefUpdateAttribute (ref-updated).
type RefUpdate struct {
	OldRev  string `json:"oldRev,omitempty"`
	NewRev  string `json:"newRev,omitempty"`
	RefName string `json:"refName,omitempty"`
	Project string `json:"project,omitempty"`
}

// ChangeKey is Gerrit's Change.Key: "changeKey":{"id":"I..."}.
type ChangeKey struct {
	ID string `json:"id"`
}

// Event is one Gerrit stream event. Every field Gerrit 3.x sends for the known
// types is present; which ones are set depends on Type. Parse fills Project and
// RefName for every type (from change, refUpdate or projectName) when Gerrit
// leaves them out.
type Event struct {
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn,omitempty"` // seconds since the epoch
	InstanceID     string `json:"instanceId,omitempty"`     // multi-site: the Gerrit instance that emitted it

	Change    *Change    `json:"change,omitempty"`
	PatchSet  *PatchSet  `json:"patchSet,omitempty"`
	ChangeKey *ChangeKey `json:"changeKey,omitempty"`
	Project   string     `json:"project,omitempty"`
	RefName   string     `json:"refName,omitempty"` // "refs/heads/main"; older Gerrit: "main"

	// The acting accounts; the JSON name depends on the type (see Account).
	Uploader  *Account `json:"uploader,omitempty"`  // patchset-created
	Author    *Account `json:"author,omitempty"`    // comment-added
	Submitter *Account `json:"submitter,omitempty"` // change-merged, ref-updated
	Abandoner *Account `json:"abandoner,omitempty"` // change-abandoned
	Restorer  *Account `json:"restorer,omitempty"`  // change-restored
	Deleter   *Account `json:"deleter,omitempty"`   // change-deleted
	Changer   *Account `json:"changer,omitempty"`   // wip-state-changed, private-state-changed, topic-changed
	Editor    *Account `json:"editor,omitempty"`    // hashtags-changed
	Adder     *Account `json:"adder,omitempty"`     // reviewer-added
	Remover   *Account `json:"remover,omitempty"`   // reviewer-deleted, vote-deleted
	Reviewer  *Account `json:"reviewer,omitempty"`  // reviewer-added, reviewer-deleted, vote-deleted: the reviewer acted upon

	Approvals []Approval `json:"approvals,omitempty"` // comment-added, reviewer-deleted, vote-deleted
	Comment   string     `json:"comment,omitempty"`   // comment-added: "Patch Set 2:\n\nrecheck"
	Reason    string     `json:"reason,omitempty"`    // change-abandoned, change-restored
	NewRev    string     `json:"newRev,omitempty"`    // change-merged: the commit on the branch
	RefUpdate *RefUpdate `json:"refUpdate,omitempty"` // ref-updated

	OldTopic string   `json:"oldTopic,omitempty"` // topic-changed
	Added    []string `json:"added,omitempty"`    // hashtags-changed
	Removed  []string `json:"removed,omitempty"`  // hashtags-changed
	Hashtags []string `json:"hashtags,omitempty"` // hashtags-changed: the hashtags after the change

	CreatedProject string `json:"projectName,omitempty"` // project-created: "projectName"
	HeadName       string `json:"headName,omitempty"`    // project-created: what Gerrit sends
	ProjectHead    string `json:"projectHead,omitempty"` // project-created: the name Gerrit's documentation uses

	// Raw is the event JSON exactly as received, after unwrapping an envelope.
	// ID hashes it; it is not re-encoded.
	Raw json.RawMessage `json:"-"`
}

var knownTypes = []string{
	TypePatchsetCreated, TypeCommentAdded, TypeChangeMerged, TypeChangeAbandoned,
	TypeChangeRestored, TypeChangeDeleted, TypeRefUpdated, TypeWIPStateChanged,
	TypePrivateStateChanged, TypeTopicChanged, TypeHashtagsChanged, TypeReviewerAdded,
	TypeReviewerDeleted, TypeVoteDeleted, TypeProjectCreated,
}

// KnownTypes returns the event types this package models, in a fixed order.
func KnownTypes() []string { return slices.Clone(knownTypes) }

// Known reports whether Type is one of the Gerrit 3.x types this package models.
// Events of other types still parse, with what they share and Raw.
func (e *Event) Known() bool { return slices.Contains(knownTypes, e.Type) }

// ChangeNumber returns change.number, or 0.
func (e *Event) ChangeNumber() int {
	if e.Change == nil {
		return 0
	}
	return int(e.Change.Number)
}

// PatchSetNumber returns patchSet.number, or 0.
func (e *Event) PatchSetNumber() int {
	if e.PatchSet == nil {
		return 0
	}
	return int(e.PatchSet.Number)
}

// ProjectName returns the project: change.project, refUpdate.project,
// projectName (project-created) or the top-level project, the first one set.
func (e *Event) ProjectName() string {
	switch {
	case e.Change != nil && e.Change.Project != "":
		return e.Change.Project
	case e.RefUpdate != nil && e.RefUpdate.Project != "":
		return e.RefUpdate.Project
	case e.CreatedProject != "":
		return e.CreatedProject
	}
	return e.Project
}

// Branch returns the short branch name: change.branch, or the branch of refName
// or refUpdate.refName ("refs/heads/main" and "main" both give "main"). A ref
// outside refs/heads/ (a tag, refs/changes/…, refs/meta/config) is no branch: "".
func (e *Event) Branch() string {
	if e.Change != nil && e.Change.Branch != "" {
		return e.Change.Branch
	}
	ref := e.RefName
	if ref == "" && e.RefUpdate != nil {
		ref = e.RefUpdate.RefName
	}
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b
	}
	if strings.HasPrefix(ref, "refs/") {
		return ""
	}
	return ref
}

// Revision returns patchSet.revision (for change-merged too: the revision that
// was submitted; NewRev is the commit on the branch), or "".
func (e *Event) Revision() string {
	if e.PatchSet == nil {
		return ""
	}
	return e.PatchSet.Revision
}

// Account returns the account that acted, by type: the uploader
// (patchset-created), author (comment-added), submitter (change-merged,
// ref-updated), abandoner, restorer, deleter, changer (wip-state-changed,
// private-state-changed, topic-changed), editor (hashtags-changed), adder
// (reviewer-added) or remover (reviewer-deleted, vote-deleted). It returns nil
// for project-created, unknown types and when Gerrit sent no account.
func (e *Event) Account() *Account {
	switch e.Type {
	case TypePatchsetCreated:
		return e.Uploader
	case TypeCommentAdded:
		return e.Author
	case TypeChangeMerged, TypeRefUpdated:
		return e.Submitter
	case TypeChangeAbandoned:
		return e.Abandoner
	case TypeChangeRestored:
		return e.Restorer
	case TypeChangeDeleted:
		return e.Deleter
	case TypeWIPStateChanged, TypePrivateStateChanged, TypeTopicChanged:
		return e.Changer
	case TypeHashtagsChanged:
		return e.Editor
	case TypeReviewerAdded:
		return e.Adder
	case TypeReviewerDeleted, TypeVoteDeleted:
		return e.Remover
	}
	return nil
}

func (e *Event) kind() string {
	if e.PatchSet == nil {
		return ""
	}
	return e.PatchSet.Kind
}

// Trivial reports whether the patch set is a trivial rebase (patchSet.kind
// TRIVIAL_REBASE or TRIVIAL_REBASE_WITH_MESSAGE_UPDATE).
func (e *Event) Trivial() bool {
	k := e.kind()
	return k == KindTrivialRebase || k == KindTrivialRebaseWithMessageUpdate
}

// NoCodeChange reports whether the patch set changes no code (patchSet.kind
// NO_CODE_CHANGE, a commit message edit, or NO_CHANGE).
func (e *Event) NoCodeChange() bool {
	k := e.kind()
	return k == KindNoCodeChange || k == KindNoChange
}

// internalRefs are the NoteDb and bookkeeping refs Gerrit updates on every
// upload, review or login. refs/meta/config is left out: it is project
// configuration a pipeline may care about.
var internalRefs = []string{
	"refs/changes/", // refs/changes/34/1234/meta, patch-set refs, robot-comments
	"refs/sequences/",
	"refs/users/",
	"refs/draft-comments/",
	"refs/starred-changes/",
	"refs/cache-automerge/",
	"refs/groups/",
	"refs/deleted-groups/",
	"refs/meta/external-ids",
	"refs/meta/group-names",
}

// IsMetaRef reports whether e is a ref-updated event for one of Gerrit's
// internal refs (refs/changes/*/meta and the other refs/changes/…, refs/sequences/,
// refs/users/, …): noise emitted on every upload, duplicated by the change events.
func (e *Event) IsMetaRef() bool {
	if e.Type != TypeRefUpdated {
		return false
	}
	ref := e.RefName
	if e.RefUpdate != nil && e.RefUpdate.RefName != "" {
		ref = e.RefUpdate.RefName
	}
	for _, p := range internalRefs {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	return false
}
