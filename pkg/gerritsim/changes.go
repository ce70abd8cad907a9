package gerritsim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Change statuses.
const (
	StatusNew       = "NEW"
	StatusMerged    = "MERGED"
	StatusAbandoned = "ABANDONED"
)

// Patch set kinds, as Gerrit names them.
const (
	KindRework                   = "REWORK"
	KindTrivialRebase            = "TRIVIAL_REBASE"
	KindTrivialRebaseWithMessage = "TRIVIAL_REBASE_WITH_MESSAGE_UPDATE"
	KindMergeFirstParentUpdate   = "MERGE_FIRST_PARENT_UPDATE"
	KindNoCodeChange             = "NO_CODE_CHANGE"
	KindNoChange                 = "NO_CHANGE"
)

const (
	zeroRev       = "0000000000000000000000000000000000000000"
	defaultBranch = "main"
	defaultFile   = "README.md"
	// Each changed file counts this many inserted and deleted lines.
	insertionsPerFile, deletionsPerFile = 10, 2
)

var kinds = []string{KindRework, KindTrivialRebase, KindTrivialRebaseWithMessage,
	KindMergeFirstParentUpdate, KindNoCodeChange, KindNoChange}

// DefaultUploader uploads when Upload.Uploader is empty.
var DefaultUploader = Account{Name: "Jane Developer", Email: "jane@example.com", Username: "jane"}

// Upload describes a push: a new change (Change == 0) or a new patch set of
// change Change.
type Upload struct {
	Project string // required for a new change; must match for a new patch set
	Branch  string // default "main"
	Subject string // default "Change <n>"; a new patch set keeps the old one when empty
	Topic   string // a new patch set keeps the old one when empty
	Change  int
	Kind    string   // default REWORK (the only kind of patch set 1)
	WIP     bool     // the change is work in progress after this upload
	Private bool     // the change is private after this upload
	Files   []string // changed paths; default the previous patch set's, or ["README.md"]
	// Uploader defaults to the change's owner, or DefaultUploader for a new
	// change; the uploader of patch set 1 owns the change.
	Uploader Account
}

// ReviewInput is what a client posted to .../review.
type ReviewInput struct {
	Message               string         `json:"message,omitempty"`
	Labels                map[string]int `json:"labels,omitempty"`
	Tag                   string         `json:"tag,omitempty"`
	Notify                string         `json:"notify,omitempty"`
	OmitDuplicateComments bool           `json:"omit_duplicate_comments,omitempty"`
	// Raw is the request body as received.
	Raw json.RawMessage `json:"-"`
}

// Review is a review accepted through REST.
type Review struct {
	Project  string
	Change   int
	Revision string // the sha the review was posted on, whatever the client named
	PatchSet int
	Input    ReviewInput
	At       time.Time
}

func (r Review) clone() Review {
	r.Input.Labels = maps.Clone(r.Input.Labels)
	r.Input.Raw = slices.Clone(r.Input.Raw)
	return r
}

type change struct {
	number            int
	project, branch   string
	changeID, subject string
	topic             string
	owner             Account
	status            string
	wip, private      bool
	created, updated  time.Time
	patchSets         []*patchSet // patchSets[i].number == i+1
	messages          []message
	metaRev           string
}

type patchSet struct {
	number    int
	revision  string
	parent    string
	ref       string
	uploader  Account
	kind      string
	created   time.Time
	files     []string
	approvals map[string]map[int]vote // label -> account id -> vote
}

type vote struct {
	value int
	by    Account
	at    time.Time
}

type message struct {
	id       string
	author   Account
	at       time.Time
	text     string
	tag      string
	patchSet int
}

func (c *change) current() *patchSet { return c.patchSets[len(c.patchSets)-1] }

func (c *change) closed() bool { return c.status != StatusNew }

func (c *change) patchSet(n int) (*patchSet, bool) {
	if n < 1 || n > len(c.patchSets) {
		return nil, false
	}
	return c.patchSets[n-1], true
}

func (c *change) commitMessage() string {
	return c.subject + "\n\nChange-Id: " + c.changeID + "\n"
}

func (c *change) forgetAccount(id int) {
	for _, ps := range c.patchSets {
		for _, votes := range ps.approvals {
			delete(votes, id)
		}
	}
	c.messages = slices.DeleteFunc(c.messages, func(m message) bool { return m.author.ID == id })
}

func changeRef(n, ps int) string { return fmt.Sprintf("refs/changes/%02d/%d/%d", n%100, n, ps) }

func metaRef(n int) string { return fmt.Sprintf("refs/changes/%02d/%d/meta", n%100, n) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func randomSHA() string { return randomHex(20) }

// Upload creates a change or a patch set and returns the change number, the
// patch set number and the patchset-created event. A ref-updated event for
// the change's meta ref goes to the OnEvent functions too.
func (s *Server) Upload(u Upload) (change, patchset int, event []byte, err error) {
	err = s.update(func() ([]emitted, error) {
		c, ps, err := s.upload(u)
		if err != nil {
			return nil, err
		}
		change, patchset = c.number, ps.number
		meta := s.touchMeta(c, ps.uploader)
		event = s.encode(patchsetCreated{
			Uploader:       accountAttr(ps.uploader),
			PatchSet:       s.patchSetAttr(ps),
			changeEvent:    s.changeEvent(c),
			Type:           "patchset-created",
			EventCreatedOn: s.stamp(),
		})
		return []emitted{meta, {"patchset-created", event}}, nil
	})
	if err != nil {
		return 0, 0, nil, err
	}
	return change, patchset, event, nil
}

func (s *Server) upload(u Upload) (*change, *patchSet, error) {
	if u.Kind == "" {
		u.Kind = KindRework
	}
	if !slices.Contains(kinds, u.Kind) {
		return nil, nil, fmt.Errorf("gerritsim: upload: kind %q: %w (want one of %s)", u.Kind, ErrInvalid, strings.Join(kinds, ", "))
	}
	if u.Uploader == (Account{}) {
		u.Uploader = DefaultUploader
		if c := s.changes[u.Change]; c != nil {
			u.Uploader = c.owner
		}
	}
	uploader := s.account(u.Uploader)
	now := s.now() // the stamp of the event about to be made

	var c *change
	if u.Change == 0 {
		if u.Project == "" {
			return nil, nil, fmt.Errorf("gerritsim: upload: project: %w (required for a new change)", ErrInvalid)
		}
		if u.Kind != KindRework {
			return nil, nil, fmt.Errorf("gerritsim: upload: kind %s: %w (patch set 1 is always REWORK)", u.Kind, ErrInvalid)
		}
		n := s.nextChange
		for s.changes[n] != nil {
			n++
		}
		s.nextChange = n + 1
		if u.Branch == "" {
			u.Branch = defaultBranch
		}
		if u.Subject == "" {
			u.Subject = fmt.Sprintf("Change %d", n)
		}
		c = &change{
			number:   n,
			project:  u.Project,
			branch:   strings.TrimPrefix(u.Branch, "refs/heads/"),
			changeID: "I" + randomSHA(),
			subject:  u.Subject,
			topic:    u.Topic,
			owner:    uploader,
			status:   StatusNew,
			created:  now,
		}
		s.changes[n] = c
	} else {
		c = s.changes[u.Change]
		switch {
		case c == nil:
			return nil, nil, fmt.Errorf("gerritsim: upload: change %d: %w", u.Change, ErrNotFound)
		case u.Project != "" && u.Project != c.project:
			return nil, nil, fmt.Errorf("gerritsim: upload: change %d is in project %s, not %s: %w", c.number, c.project, u.Project, ErrInvalid)
		case u.Branch != "" && strings.TrimPrefix(u.Branch, "refs/heads/") != c.branch:
			return nil, nil, fmt.Errorf("gerritsim: upload: change %d is on branch %s, not %s: %w", c.number, c.branch, u.Branch, ErrInvalid)
		case c.closed():
			return nil, nil, fmt.Errorf("gerritsim: upload: change %d closed (%s): %w", c.number, c.status, ErrConflict)
		}
		if u.Subject != "" {
			c.subject = u.Subject
		}
		if u.Topic != "" {
			c.topic = u.Topic
		}
	}
	c.wip, c.private = u.WIP, u.Private
	c.updated = now

	ps := &patchSet{
		number:    len(c.patchSets) + 1,
		revision:  randomSHA(),
		uploader:  uploader,
		kind:      u.Kind,
		created:   now,
		files:     slices.Clone(u.Files),
		approvals: map[string]map[int]vote{},
	}
	ps.ref = changeRef(c.number, ps.number)
	if len(c.patchSets) == 0 {
		ps.parent = randomSHA()
	} else {
		prev := c.current()
		ps.parent = prev.parent
		switch u.Kind {
		case KindTrivialRebase, KindTrivialRebaseWithMessage, KindMergeFirstParentUpdate:
			ps.parent = randomSHA()
		}
		if ps.files == nil {
			ps.files = slices.Clone(prev.files)
		}
	}
	if len(ps.files) == 0 {
		ps.files = []string{defaultFile}
	}
	c.patchSets = append(c.patchSets, ps)
	return c, ps, nil
}

// Comment posts a review by author on patch set patchset (0: the current
// one) of change, as a person would in the web UI, and returns the
// comment-added event. Labels on a closed change fail with ErrConflict.
func (s *Server) Comment(change, patchset int, author Account, message string, approvals map[string]int) ([]byte, error) {
	var event []byte
	err := s.update(func() ([]emitted, error) {
		c, ok := s.changes[change]
		if !ok {
			return nil, fmt.Errorf("gerritsim: comment: change %d: %w", change, ErrNotFound)
		}
		if patchset == 0 {
			patchset = c.current().number
		}
		ps, ok := c.patchSet(patchset)
		if !ok {
			return nil, fmt.Errorf("gerritsim: comment: change %d patch set %d: %w", change, patchset, ErrNotFound)
		}
		if err := s.checkLabels(c, approvals); err != nil {
			return nil, fmt.Errorf("gerritsim: comment: change %d: %w", change, err)
		}
		if message == "" && len(approvals) == 0 {
			return nil, fmt.Errorf("gerritsim: comment: change %d: %w (no message and no votes)", change, ErrInvalid)
		}
		evs := s.review(c, ps, s.account(author), ReviewInput{Message: message, Labels: approvals})
		event = evs[len(evs)-1].data
		return evs, nil
	})
	if err != nil {
		return nil, err
	}
	return event, nil
}

// labelError is a review the labels of which Gerrit refuses.
type labelError struct {
	status int
	msg    string
	err    error
}

func (e *labelError) Error() string { return e.msg }
func (e *labelError) Unwrap() error { return e.err }

// checkLabels validates labels as Gerrit does for a review on c. Callers hold mu.
func (s *Server) checkLabels(c *change, labels map[string]int) error {
	if len(labels) == 0 {
		return nil
	}
	if c.closed() {
		return &labelError{409, "change is closed", ErrConflict}
	}
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		r, ok := s.opts.Labels[name]
		if !ok {
			return &labelError{400, fmt.Sprintf("label %q is not a configured label", name), ErrInvalid}
		}
		if v := labels[name]; v < r.Min || v > r.Max {
			return &labelError{400, fmt.Sprintf("label %q: %d is restricted", name, v), ErrInvalid}
		}
	}
	return nil
}

// review applies in to patch set ps of c as author and returns the events:
// a meta ref-updated and, when the review says anything, comment-added (last).
// Callers hold mu and have checked the labels.
func (s *Server) review(c *change, ps *patchSet, author Account, in ReviewInput) []emitted {
	now := s.now()
	var approvals []approvalAttr
	var changed []string
	for _, name := range slices.Sorted(maps.Keys(in.Labels)) {
		v := in.Labels[name]
		votes := ps.approvals[name]
		if votes == nil {
			votes = map[int]vote{}
			ps.approvals[name] = votes
		}
		old := votes[author.ID].value
		a := approvalAttr{Type: name, Description: name, Value: fmt.Sprint(v)}
		if old != v {
			a.OldValue = fmt.Sprint(old)
			changed = append(changed, formatVote(name, v))
		}
		approvals = append(approvals, a)
		if v == 0 {
			delete(votes, author.ID)
		} else {
			votes[author.ID] = vote{value: v, by: author, at: now}
		}
	}
	if in.Message == "" && len(in.Labels) == 0 {
		return nil
	}
	text := fmt.Sprintf("Patch Set %d:", ps.number)
	if len(changed) > 0 {
		text += " " + strings.Join(changed, " ")
	}
	if in.Message != "" {
		text += "\n\n" + in.Message
	}
	c.messages = append(c.messages, message{
		id: randomHex(20), author: author, at: now, text: text, tag: in.Tag, patchSet: ps.number,
	})
	c.updated = now
	meta := s.touchMeta(c, author)
	ev := s.encode(commentAdded{
		Author:         accountAttr(author),
		Approvals:      approvals,
		Comment:        text,
		PatchSet:       s.patchSetAttr(ps),
		changeEvent:    s.changeEvent(c),
		Type:           "comment-added",
		EventCreatedOn: s.stamp(),
	})
	return []emitted{meta, {"comment-added", ev}}
}

// formatVote writes a vote as Gerrit's change messages do: "Verified+1",
// "Code-Review-2", and "-Verified" for a vote removed.
func formatVote(label string, v int) string {
	switch {
	case v > 0:
		return fmt.Sprintf("%s+%d", label, v)
	case v < 0:
		return fmt.Sprintf("%s%d", label, v)
	default:
		return "-" + label
	}
}

// Abandon abandons change number and returns the change-abandoned event.
// An empty by means the owner.
func (s *Server) Abandon(number int, by Account, reason string) ([]byte, error) {
	return s.transition(number, by, abandon, reason, func(c *change, by Account) any {
		return changeAbandoned{
			Abandoner: accountAttr(by), Reason: reason,
			PatchSet: s.patchSetAttr(c.current()), changeEvent: s.changeEvent(c),
			Type: abandon.event, EventCreatedOn: s.stamp(),
		}
	})
}

// Restore restores abandoned change number and returns the change-restored
// event. An empty by means the owner.
func (s *Server) Restore(number int, by Account, reason string) ([]byte, error) {
	return s.transition(number, by, restore, reason, func(c *change, by Account) any {
		return changeRestored{
			Restorer: accountAttr(by), Reason: reason,
			PatchSet: s.patchSetAttr(c.current()), changeEvent: s.changeEvent(c),
			Type: restore.event, EventCreatedOn: s.stamp(),
		}
	})
}

// Merge submits change number (fast-forward: the branch moves to the current
// revision) and returns the change-merged event; a ref-updated for the
// branch goes to the OnEvent functions too. An empty by means the owner.
func (s *Server) Merge(number int, by Account) ([]byte, error) {
	return s.transition(number, by, merge, "", func(c *change, by Account) any {
		return changeMerged{
			Submitter: accountAttr(by), NewRev: c.current().revision,
			PatchSet: s.patchSetAttr(c.current()), changeEvent: s.changeEvent(c),
			Type: merge.event, EventCreatedOn: s.stamp(),
		}
	})
}

// statusChange is a move of a change from one status to another.
type statusChange struct {
	op, event string // "abandon", "change-abandoned"
	from, to  string
	message   string // the change message Gerrit writes
}

var (
	abandon = statusChange{"abandon", "change-abandoned", StatusNew, StatusAbandoned, "Abandoned"}
	restore = statusChange{"restore", "change-restored", StatusAbandoned, StatusNew, "Restored"}
	merge   = statusChange{"merge", "change-merged", StatusNew, StatusMerged, "Change has been successfully merged"}
)

func (s *Server) transition(n int, by Account, sc statusChange, reason string, event func(*change, Account) any) ([]byte, error) {
	var data []byte
	err := s.update(func() ([]emitted, error) {
		c, ok := s.changes[n]
		if !ok {
			return nil, fmt.Errorf("gerritsim: %s: change %d: %w", sc.op, n, ErrNotFound)
		}
		if c.status != sc.from {
			return nil, fmt.Errorf("gerritsim: %s: change %d is %s: %w", sc.op, n, c.status, ErrConflict)
		}
		if by == (Account{}) {
			by = c.owner
		}
		by = s.account(by)
		now := s.now()
		c.status, c.updated = sc.to, now
		text := sc.message
		if reason != "" {
			text += "\n\n" + reason
		}
		c.messages = append(c.messages, message{id: randomHex(20), author: by, at: now, text: text, patchSet: c.current().number})
		evs := []emitted{s.touchMeta(c, by)}
		if sc.to == StatusMerged {
			ps := c.current()
			evs = append(evs, s.refUpdated(by, c.project, "refs/heads/"+c.branch, ps.parent, ps.revision))
		}
		data = s.encode(event(c, by))
		return append(evs, emitted{sc.event, data}), nil
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// touchMeta moves the change's NoteDb meta ref and returns the ref-updated
// event Gerrit emits for it. Callers hold mu.
func (s *Server) touchMeta(c *change, by Account) emitted {
	old := c.metaRev
	if old == "" {
		old = zeroRev
	}
	c.metaRev = randomSHA()
	return s.refUpdated(by, c.project, metaRef(c.number), old, c.metaRev)
}

func (s *Server) refUpdated(by Account, project, ref, oldRev, newRev string) emitted {
	return emitted{"ref-updated", s.encode(refUpdated{
		Submitter:      accountAttr(by),
		RefUpdate:      refUpdateAttr{OldRev: oldRev, NewRev: newRev, RefName: ref, Project: project},
		Type:           "ref-updated",
		EventCreatedOn: s.stamp(),
	})}
}
