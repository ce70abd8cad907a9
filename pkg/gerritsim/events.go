package gerritsim

import (
	"encoding/json"
	"fmt"
)

// The stream-event JSON of Gerrit 3.x (Documentation/json.html and
// cmd-stream-events.html). Field order follows Gerrit's Gson output: the
// event's own fields, then patchSet, change, project, refName, changeKey,
// type and eventCreatedOn. Numbers are ints, approval values are strings,
// refName is "refs/heads/<branch>".

type accountJSON struct {
	Name     string `json:"name,omitempty"`
	Email    string `json:"email,omitempty"`
	Username string `json:"username,omitempty"`
}

func accountAttr(a Account) accountJSON {
	return accountJSON{Name: a.Name, Email: a.Email, Username: a.Username}
}

type changeAttr struct {
	Project       string      `json:"project"`
	Branch        string      `json:"branch"`
	Topic         string      `json:"topic,omitempty"`
	ID            string      `json:"id"`
	Number        int         `json:"number"`
	Subject       string      `json:"subject"`
	Owner         accountJSON `json:"owner"`
	URL           string      `json:"url"`
	CommitMessage string      `json:"commitMessage"`
	CreatedOn     int64       `json:"createdOn"`
	Status        string      `json:"status"`
	WIP           bool        `json:"wip,omitempty"`
	Private       bool        `json:"private,omitempty"`
}

type patchSetAttr struct {
	Number         int         `json:"number"`
	Revision       string      `json:"revision"`
	Parents        []string    `json:"parents"`
	Ref            string      `json:"ref"`
	Uploader       accountJSON `json:"uploader"`
	CreatedOn      int64       `json:"createdOn"`
	Author         accountJSON `json:"author"`
	Kind           string      `json:"kind"`
	SizeInsertions int         `json:"sizeInsertions"`
	SizeDeletions  int         `json:"sizeDeletions"`
}

type changeKeyAttr struct {
	ID string `json:"id"`
}

type approvalAttr struct {
	Type        string `json:"type"`
	Description string `json:"description"`
	Value       string `json:"value"`
	OldValue    string `json:"oldValue,omitempty"`
}

type refUpdateAttr struct {
	OldRev  string `json:"oldRev"`
	NewRev  string `json:"newRev"`
	RefName string `json:"refName"`
	Project string `json:"project"`
}

// changeEvent holds the fields every change event shares.
type changeEvent struct {
	Change    changeAttr    `json:"change"`
	Project   string        `json:"project"`
	RefName   string        `json:"refName"`
	ChangeKey changeKeyAttr `json:"changeKey"`
}

type patchsetCreated struct {
	Uploader accountJSON  `json:"uploader"`
	PatchSet patchSetAttr `json:"patchSet"`
	changeEvent
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn"`
}

type commentAdded struct {
	Author    accountJSON    `json:"author"`
	Approvals []approvalAttr `json:"approvals,omitempty"`
	Comment   string         `json:"comment"`
	PatchSet  patchSetAttr   `json:"patchSet"`
	changeEvent
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn"`
}

type changeAbandoned struct {
	Abandoner accountJSON  `json:"abandoner"`
	Reason    string       `json:"reason,omitempty"`
	PatchSet  patchSetAttr `json:"patchSet"`
	changeEvent
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn"`
}

type changeRestored struct {
	Restorer accountJSON  `json:"restorer"`
	Reason   string       `json:"reason,omitempty"`
	PatchSet patchSetAttr `json:"patchSet"`
	changeEvent
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn"`
}

type changeMerged struct {
	Submitter accountJSON  `json:"submitter"`
	NewRev    string       `json:"newRev"`
	PatchSet  patchSetAttr `json:"patchSet"`
	changeEvent
	Type           string `json:"type"`
	EventCreatedOn int64  `json:"eventCreatedOn"`
}

type refUpdated struct {
	Submitter      accountJSON   `json:"submitter"`
	RefUpdate      refUpdateAttr `json:"refUpdate"`
	Type           string        `json:"type"`
	EventCreatedOn int64         `json:"eventCreatedOn"`
}

// changeEvent describes c as events do. Callers hold mu.
func (s *Server) changeEvent(c *change) changeEvent {
	return changeEvent{
		Change: changeAttr{
			Project:       c.project,
			Branch:        c.branch,
			Topic:         c.topic,
			ID:            c.changeID,
			Number:        c.number,
			Subject:       c.subject,
			Owner:         accountAttr(c.owner),
			URL:           fmt.Sprintf("%s/c/%s/+/%d", s.canonical(), c.project, c.number),
			CommitMessage: c.commitMessage(),
			CreatedOn:     c.created.Unix(),
			Status:        c.status,
			WIP:           c.wip,
			Private:       c.private,
		},
		Project:   c.project,
		RefName:   "refs/heads/" + c.branch,
		ChangeKey: changeKeyAttr{ID: c.changeID},
	}
}

// patchSetAttr describes patch set ps as events do.
func (s *Server) patchSetAttr(ps *patchSet) patchSetAttr {
	return patchSetAttr{
		Number:         ps.number,
		Revision:       ps.revision,
		Parents:        []string{ps.parent},
		Ref:            ps.ref,
		Uploader:       accountAttr(ps.uploader),
		CreatedOn:      ps.created.Unix(),
		Author:         accountAttr(ps.uploader),
		Kind:           ps.kind,
		SizeInsertions: insertionsPerFile * len(ps.files),
		SizeDeletions:  -deletionsPerFile * len(ps.files),
	}
}

// encode marshals an event; the event types above always marshal.
func (s *Server) encode(ev any) []byte {
	b, err := json.Marshal(ev)
	if err != nil {
		panic(fmt.Sprintf("gerritsim: encode %T: %v", ev, err))
	}
	return b
}
