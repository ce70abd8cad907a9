package voter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// startedKey is the votes key of a build set's "build started" message. Token
// never writes "_" before anything but two hex digits, so no replay id maps here.
func startedKey(setID string) string { return setID + "._started" }

// StartedMarker is the last line of a "build started" message. It differs from
// Marker, so a started message is never mistaken for the vote.
func StartedMarker(setID string) string { return Marker(setID, "") + " started" }

// StartedMessage is the Gerrit Trigger plugin's "Build Started" message: the
// jobs of the set, with the Jenkins jobs that run them.
func StartedMessage(set build.Set) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Build Started (patch set %d)\n\n", set.PatchSet)
	for _, j := range set.Jobs {
		voting := ""
		if !j.Voting {
			voting = " (non-voting)"
		}
		fmt.Fprintf(&b, "- %s: Jenkins job %s%s\n", j.Name, j.JenkinsJob, voting)
	}
	b.WriteString("\n" + StartedMarker(set.ID))
	return b.String()
}

// started posts the message of vote.started once per build set, on the first
// ci.builds.triggered of the set. It is informational and at most once: a
// crash between the claim and the post loses the message, never the vote.
func (v *Voter) started(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	if !v.cfg.Started {
		return nil, nil
	}
	var t build.Triggered
	if err := build.Decode(m.Data, &t); err != nil {
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: %w", m.Subject, m.StreamSeq, err))
	}
	set, err := v.readSet(ctx, t.BuildSet)
	if err != nil {
		return nil, err
	}
	if set.Change == 0 || set.State != build.SetRunning {
		return nil, nil
	}
	key := startedKey(set.ID)
	rev, err := v.votes.Create(ctx, key, build.Encode(build.Vote{
		BuildSet: set.ID, Project: set.Project, Change: set.Change, PatchSet: set.PatchSet, Revision: set.Revision,
		State: build.VotePosting, Owner: v.owner, Claimed: v.now(),
	}))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil // announced already
	}
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", key, err)
	}
	msg := StartedMessage(set)
	err = v.gerrit.Review(ctx, set.Project, set.Change, set.Revision, gerrit.Review{Message: msg, Tag: v.cfg.Tag, Notify: "NONE"})
	switch {
	case errors.Is(err, gerrit.ErrClosed):
		m.Log.InfoContext(ctx, "no started message", telemetry.KeyDecision, "skip", telemetry.KeyReason, "change closed")
		return nil, nil
	case err != nil:
		// Nothing reached Gerrit, or we cannot tell: let a redelivery try again.
		if derr := v.votes.Delete(ctx, key, jetstream.LastRevision(rev)); derr != nil {
			m.Log.WarnContext(ctx, "started claim not released", telemetry.KeyErr, derr)
		}
		return nil, err
	}
	rec := build.Vote{BuildSet: set.ID, Project: set.Project, Change: set.Change, PatchSet: set.PatchSet, Revision: set.Revision,
		Message: msg, Digest: build.Digest(msg), State: build.VotePosted, Owner: v.owner, Claimed: v.now(), Posted: v.now()}
	if _, err := v.votes.Update(ctx, key, build.Encode(rec), rev); err != nil {
		m.Log.WarnContext(ctx, "started message posted, record not updated", telemetry.KeyErr, err)
	}
	m.Log.InfoContext(ctx, "build started message posted", telemetry.KeyDecision, "started", telemetry.KeyBuildSet, set.ID)
	return nil, nil
}
