// Package voter is the last stage: when every job of a build set has
// completed, it posts one review on the exact patch set that was built and
// publishes what it posted on ci.votes.posted. A vote an operator replays
// (gfctl replay ci.votes.posted publishes it on ci.votes.replay) is decided
// and posted again, once per replay id.
//
// Exactly once: the votes bucket holds one record per build set (or per
// build set and replay id). A replica claims it with Create before it talks
// to Gerrit and moves it to posted or skipped with Update on the claim's
// revision. A claim left in "posting" by a replica that died is settled by
// asking Gerrit whether the review, which ends with a marker line, is there.
package voter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Spec is the voter's consumer of ci.builds.completed.
var Spec = stage.Spec{Service: "voter", Stream: streams.CIBuilds, Durable: "voter", HandleTimeout: 2 * time.Minute}

// ReplaySpec is the voter's consumer of ci.votes.replay: votes an operator
// asked to post again (gfctl replay ci.votes.posted). Its poison messages go to
// the voter's DLQ, gerritflow.dlq.voter, like those of Spec.
var ReplaySpec = stage.Spec{Service: "voter", Stream: streams.CIVotes, Durable: "voter-replay", HandleTimeout: 2 * time.Minute}

// Needs is what the voter binds to.
var Needs = streams.Need{
	Streams:   []string{streams.CIBuilds, streams.CIVotes, streams.DLQ},
	Consumers: []string{"voter", "voter-replay"},
	Buckets:   []string{streams.BucketBuildSets, streams.BucketBuilds, streams.BucketVotes},
}

// ClaimTTL is how long a "posting" claim of another replica is trusted to be
// alive. The claimant makes no Gerrit call later than ClaimTTL/2 after
// claiming, so an older claim is one whose holder died or gave up.
const ClaimTTL = 2 * time.Minute

// Gerrit is what the voter needs from Gerrit. Errors come classified by the
// adapter: gerrit.ErrClosed, stage.Permanent, or transient.
type Gerrit interface {
	Change(ctx context.Context, project string, number int) (gerrit.Change, error)
	Review(ctx context.Context, project string, number int, revision string, in gerrit.Review) error
	HasMessage(ctx context.Context, project string, number int, marker string) (bool, error)
}

// Voter is the stage handler.
type Voter struct {
	cfg                      config.Vote
	gerrit                   Gerrit
	buildsets, builds, votes jetstream.KeyValue
	log                      *slog.Logger
	votesTotal               *prometheus.CounterVec
	owner                    string // this process, in the claims it makes
	now                      func() time.Time

	mu       sync.Mutex
	inFlight map[string]bool // votes keys this process is working on
}

// New returns the voter.
func New(cfg config.Vote, g Gerrit, buildsets, builds, votes jetstream.KeyValue, tel *telemetry.Telemetry) *Voter {
	return &Voter{
		cfg: cfg, gerrit: g, buildsets: buildsets, builds: builds, votes: votes,
		log:        tel.Logger,
		votesTotal: tel.Counter("votes_total", "Build sets decided, by outcome (posted, commented, closed, outdated, superseded, abandoned, duplicate, recovered).", "outcome"),
		owner:      replicaID(),
		now:        time.Now,
		inFlight:   map[string]bool{},
	}
}

// replicaID names this process uniquely: a restarted process on the same
// host is another claimant.
func replicaID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// errBusy is the transient error of a vote being posted elsewhere right now.
var errBusy = errors.New("vote is being posted")

// Handle takes one ci.builds.completed message. It votes when the message's
// build set is complete, and does nothing otherwise: the last completion votes.
// A ci.builds.triggered message posts the optional "build started" message.
func (v *Voter) Handle(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	if m.Subject == subject.BuildsTriggered {
		return v.started(ctx, m)
	}
	var c build.Completed
	if err := build.Decode(m.Data, &c); err != nil {
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: %w", m.Subject, m.StreamSeq, err))
	}
	if c.BuildSet == "" || c.Job == "" {
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: no buildset or job", m.Subject, m.StreamSeq))
	}
	set, err := v.readSet(ctx, c.BuildSet)
	if err != nil {
		return nil, err
	}
	return v.decide(ctx, m, set, &c)
}

// Replays is the handler of ci.votes.replay. Its message is a vote as
// ci.votes.posted carries it, with a Gerritflow-Replay header: the voter
// does for the vote's build set exactly what a replayed ci.builds.completed
// does — recompute the vote from the buildsets and builds records and post it
// once under the votes key <buildset>.<replay-token>.
func (v *Voter) Replays() stage.Handler { return stage.HandlerFunc(v.handleReplay) }

func (v *Voter) handleReplay(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	if m.Header.Get(bus.Replay) == "" {
		// Only an operator's replay posts a vote again; a stray publish must not.
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: no %s header: a vote is posted again only by a deliberate replay (gfctl replay %s)",
			m.Subject, m.StreamSeq, bus.Replay, subject.VotesPosted))
	}
	var old build.Vote
	if err := build.Decode(m.Data, &old); err != nil {
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: %w", m.Subject, m.StreamSeq, err))
	}
	if old.BuildSet == "" {
		return nil, stage.Permanent(fmt.Errorf("%s seq %d: vote without buildset", m.Subject, m.StreamSeq))
	}
	set, err := v.readSet(ctx, old.BuildSet)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// The vote proves the build set was recorded, long ago: its record expired.
		return nil, stage.Permanent(fmt.Errorf("replay vote of buildset %s: the build set record is gone (older than the buildsets bucket's max age?): %w", old.BuildSet, err))
	}
	if err != nil {
		return nil, err
	}
	if old.Change != 0 && old.Change != set.Change || old.Project != "" && old.Project != set.Project {
		return nil, stage.Permanent(fmt.Errorf("replay vote of buildset %s: the vote is for %s~%d, the build set for %s~%d",
			set.ID, old.Project, old.Change, set.Project, set.Change))
	}
	return v.decide(ctx, m, set, nil)
}

// decide votes on set once every job is completed. c is the completion that
// brought the message, if any: its build counts as completed whatever its
// record says.
func (v *Voter) decide(ctx context.Context, m stage.Msg, set build.Set, c *build.Completed) ([]stage.Out, error) {
	log := m.Log
	if log == nil {
		log = v.log
	}
	log = withSet(log, m.Header, set)
	span := trace.SpanFromContext(ctx)
	// A replayed vote's headers may not name the change: the build set does.
	span.SetAttributes(append(telemetry.ChangeAttrs(set.Project, set.Change, set.PatchSet), telemetry.AttrBuildSet.String(set.ID))...)
	job := ""
	if c != nil {
		job = c.Job
	}
	if set.State == build.SetSuperseded || set.State == build.SetAbandoned || set.State == build.SetClosed {
		if outs, found, err := v.settleLeft(ctx, m, set, log); found {
			return outs, err
		}
		v.votesTotal.WithLabelValues(set.State).Inc()
		log.InfoContext(ctx, "no vote", telemetry.KeyDecision, "skip", telemetry.KeyReason, "build set "+set.State, telemetry.KeyJob, job)
		return nil, nil
	}
	builds, pending, err := v.readBuilds(ctx, set, c)
	if err != nil {
		return nil, err
	}
	if len(pending) > 0 {
		if c == nil { // a replayed vote: its builds completed before it was first posted
			return nil, fmt.Errorf("replay vote of buildset %s: builds %v not completed in KV yet", set.ID, pending)
		}
		log.InfoContext(ctx, "waiting for builds", telemetry.KeyDecision, "wait", telemetry.KeyJob, job, "pending", pending)
		return nil, nil
	}
	link(span, set, builds)

	replay := m.Header.Get(bus.Replay)
	key := VotesKey(set.ID, replay)
	if !v.enter(key) {
		return nil, fmt.Errorf("vote %s: %w by this replica", key, errBusy)
	}
	defer v.leave(key)

	b := ballot{set: set, builds: builds, replay: replay, key: key, log: log}
	rec, rev, settled, err := v.claim(ctx, b)
	if err == nil && !settled {
		rec, err = v.post(ctx, b, rec, rev)
	}
	if err != nil {
		return nil, err
	}
	return []stage.Out{output(rec, m)}, nil
}

// settleLeft settles the votes record that a build set no longer owed a vote
// may still have. A replica that posted the review and died before recording
// it left its claim "posting"; if the patch set was superseded or the change
// closed before the redelivery, the set is no longer running, and without
// this the claim would stay "posting" for good and the review on Gerrit would
// never be announced. The claim is settled as a running set's would be
// (settle); what nobody posted is recorded skipped, never posted now. A
// record already settled is announced again (its Msg-Id drops a duplicate),
// which covers a replica that died between the record and the announcement.
// found is false when the set has no votes record: nothing to settle.
func (v *Voter) settleLeft(ctx context.Context, m stage.Msg, set build.Set, log *slog.Logger) (outs []stage.Out, found bool, err error) {
	replay := m.Header.Get(bus.Replay)
	key := VotesKey(set.ID, replay)
	if !v.enter(key) {
		return nil, true, fmt.Errorf("vote %s: %w by this replica", key, errBusy)
	}
	defer v.leave(key)
	e, err := v.votes.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, true, fmt.Errorf("read vote %s: %w", key, err)
	}
	b := ballot{set: set, replay: replay, key: key, log: log}
	rec, rev, settled, err := v.settle(ctx, b, e)
	if err == nil && !settled {
		rec, err = v.skip(ctx, b, rec, rev, set.State, "build set "+set.State)
	}
	if err != nil {
		return nil, true, err
	}
	return []stage.Out{output(rec, m)}, true, nil
}

// VotesKey is the key of set's vote in the votes bucket: the build set id,
// or <buildset>.<replay-token> for a replay, so that each replay posts once.
func VotesKey(setID, replay string) string {
	if replay == "" {
		return setID
	}
	return setID + "." + subject.Token(replay)
}

// withSet adds the build set's keys the stage loop did not find in the headers.
func withSet(log *slog.Logger, h nats.Header, set build.Set) *slog.Logger {
	var args []any
	if h.Get(bus.BuildSet) == "" {
		args = append(args, telemetry.KeyBuildSet, set.ID)
	}
	if h.Get(bus.GerritChange) == "" {
		args = append(args, telemetry.KeyChange, set.Change, telemetry.KeyPatchset, set.PatchSet, telemetry.KeyProject, set.Project)
	}
	if len(args) == 0 {
		return log
	}
	return log.With(args...)
}

// ballot is one build set about to be voted on.
type ballot struct {
	set    build.Set
	builds []build.Build
	replay string
	key    string // in the votes bucket
	log    *slog.Logger
}

func (b ballot) marker() string { return Marker(b.set.ID, b.replay) }

func (v *Voter) readSet(ctx context.Context, id string) (build.Set, error) {
	e, err := v.buildsets.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// The trigger writes it before any build starts; KV reads may lag.
		return build.Set{}, fmt.Errorf("read buildset %s: not found yet: %w", id, err)
	}
	if err != nil {
		return build.Set{}, fmt.Errorf("read buildset %s: %w", id, err)
	}
	var set build.Set
	if err := build.Decode(e.Value(), &set); err != nil {
		return build.Set{}, stage.Permanent(fmt.Errorf("read buildset %s: %w", id, err))
	}
	if set.ID == "" {
		set.ID = id
	}
	return set, nil
}

// readBuilds returns the builds of every job of set, in the set's order, and
// the jobs not completed yet. The build of the completion c, if any, counts as
// completed whatever its record says (a KV read may lag behind the monitor).
func (v *Voter) readBuilds(ctx context.Context, set build.Set, c *build.Completed) ([]build.Build, []string, error) {
	var builds []build.Build
	var pending []string
	mine := false
	for _, j := range set.Jobs {
		key := subject.BuildKey(set.ID, j.Name)
		var b build.Build
		e, err := v.builds.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			b = build.Build{BuildSet: set.ID, Job: j.Name, JenkinsJob: j.JenkinsJob, Voting: j.Voting}
		case err != nil:
			return nil, nil, fmt.Errorf("read build %s: %w", key, err)
		default:
			if err := build.Decode(e.Value(), &b); err != nil {
				return nil, nil, stage.Permanent(fmt.Errorf("read build %s: %w", key, err))
			}
		}
		if c != nil && j.Name == c.Job {
			mine = true
			if b.State != build.StateCompleted {
				b.State, b.Result, b.Number, b.URL, b.Duration = build.StateCompleted, c.Result, c.Number, c.URL, c.Duration
			}
		}
		if b.Job == "" {
			b.Job = j.Name
		}
		if b.State != build.StateCompleted {
			pending = append(pending, j.Name)
		}
		builds = append(builds, b)
	}
	if c != nil && !mine {
		return nil, nil, stage.Permanent(fmt.Errorf("completed build of job %s: not a job of buildset %s", c.Job, set.ID))
	}
	return builds, pending, nil
}

// link adds the fan-in: one span link to each build's trace (the trigger's
// span that started it), and one to the triggering event's, each saying
// which input it is (ci.job, or none for the build set).
func link(span trace.Span, set build.Set, builds []build.Build) {
	type input struct {
		tp    string
		attrs []attribute.KeyValue
	}
	ins := []input{{set.Traceparent, []attribute.KeyValue{telemetry.AttrBuildSet.String(set.ID)}}}
	for _, b := range builds {
		ins = append(ins, input{b.Traceparent, []attribute.KeyValue{telemetry.AttrBuildSet.String(set.ID), telemetry.AttrJob.String(b.Job)}})
	}
	for _, in := range ins {
		if in.tp == "" {
			continue
		}
		sc := trace.SpanContextFromContext(bus.Extract(context.Background(), nats.Header{bus.Traceparent: {in.tp}}))
		if sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: in.attrs})
		}
	}
}

func (v *Voter) enter(key string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inFlight[key] {
		return false
	}
	v.inFlight[key] = true
	return true
}

func (v *Voter) leave(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.inFlight, key)
}

// claim takes the votes record of b for this process. It returns the record
// and the revision to Update it with; settled means there is nothing left to
// do (posted or skipped before, or found on Gerrit) and rec is the outcome.
func (v *Voter) claim(ctx context.Context, b ballot) (rec build.Vote, rev uint64, settled bool, err error) {
	rec = v.newClaim(b)
	rev, err = v.votes.Create(ctx, b.key, build.Encode(rec))
	if err == nil {
		return rec, rev, false, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return rec, 0, false, fmt.Errorf("claim vote %s: %w", b.key, err)
	}
	e, err := v.votes.Get(ctx, b.key)
	if err != nil { // deleted in between (a claim released): redeliver and claim again
		return rec, 0, false, fmt.Errorf("read vote %s: %w", b.key, err)
	}
	return v.settle(ctx, b, e)
}

// newClaim is this process's "posting" record of b, as of now.
func (v *Voter) newClaim(b ballot) build.Vote {
	return build.Vote{
		BuildSet: b.set.ID, Replay: b.replay, Project: b.set.Project, Change: b.set.Change,
		PatchSet: b.set.PatchSet, Revision: b.set.Revision,
		State: build.VotePosting, Owner: v.owner, Claimed: v.now().UTC(),
	}
}

// settle decides on the votes record e that b found: settled before (nothing
// to do), a live claim of another replica (errBusy: the redelivery waits for
// it), or a claim whose holder may have posted and died — its review found on
// Gerrit is recorded posted, otherwise this process takes the claim over.
// Like claim, it returns the record and the revision to Update it with.
func (v *Voter) settle(ctx context.Context, b ballot, e jetstream.KeyValueEntry) (rec build.Vote, rev uint64, settled bool, err error) {
	rec = v.newClaim(b)
	var old build.Vote
	if err := build.Decode(e.Value(), &old); err != nil {
		return rec, 0, false, stage.Permanent(fmt.Errorf("read vote %s: %w", b.key, err))
	}
	switch {
	case old.State == build.VotePosted || old.State == build.VoteSkipped:
		v.votesTotal.WithLabelValues("duplicate").Inc()
		b.log.InfoContext(ctx, "vote already "+old.State, telemetry.KeyDecision, "duplicate", "vote", b.key)
		return old, 0, true, nil
	case old.Owner != v.owner && v.now().Sub(old.Claimed) < ClaimTTL:
		return rec, 0, false, fmt.Errorf("vote %s: %w by %s since %s", b.key, errBusy, old.Owner, old.Claimed.Format(time.RFC3339))
	}
	// A claim of ours that no handler holds (enter guards that), or one older
	// than ClaimTTL: its holder may have posted and died before recording it.
	found, err := v.gerrit.HasMessage(ctx, b.set.Project, b.set.Change, b.marker())
	if err != nil {
		return rec, 0, false, fmt.Errorf("vote %s: look for a review posted by %s: %w", b.key, old.Owner, err)
	}
	if found {
		old.State, old.Posted = build.VotePosted, v.now().UTC()
		if old.Reason == "" {
			old.Reason = "found on Gerrit after an interrupted post"
		}
		if _, err := v.votes.Update(ctx, b.key, build.Encode(old), e.Revision()); err != nil {
			return rec, 0, false, fmt.Errorf("record vote %s posted: %w", b.key, err)
		}
		v.votesTotal.WithLabelValues("recovered").Inc()
		b.log.InfoContext(ctx, "vote found on Gerrit", telemetry.KeyDecision, "recover", "vote", b.key, "owner", old.Owner)
		return old, 0, true, nil
	}
	rev, err = v.votes.Update(ctx, b.key, build.Encode(rec), e.Revision())
	if err != nil { // ErrKeyRevisionMismatch: someone else took it over first
		return rec, 0, false, fmt.Errorf("take over vote %s from %s: %w", b.key, old.Owner, err)
	}
	b.log.InfoContext(ctx, "vote claim taken over", telemetry.KeyDecision, "takeover", "vote", b.key, "owner", old.Owner)
	return rec, rev, false, nil
}

// post decides and posts the review of b under the claim rec (at rev), and
// records the outcome. Until the review is sent, a failure releases the claim.
func (v *Voter) post(ctx context.Context, b ballot, rec build.Vote, rev uint64) (build.Vote, error) {
	// No Gerrit call later than ClaimTTL/2 after the claim (see ClaimTTL).
	gctx, cancel := context.WithTimeout(ctx, ClaimTTL/2)
	defer cancel()
	set := b.set

	ch, err := v.gerrit.Change(gctx, set.Project, set.Change)
	if err != nil {
		return rec, v.release(ctx, b, rev, err)
	}
	if ch.Closed() {
		return v.skip(ctx, b, rec, rev, "closed", "change "+ch.Status)
	}
	if n, ok := ch.Revisions[set.Revision]; len(ch.Revisions) > 0 && (!ok || set.PatchSet > 0 && n != set.PatchSet) {
		return rec, v.release(ctx, b, rev, stage.Permanent(fmt.Errorf(
			"vote %s: revision %s is not patch set %d of %s~%d", b.key, set.Revision, set.PatchSet, set.Project, set.Change)))
	}
	outdated := ch.CurrentRevision != set.Revision
	value, counted := Decide(v.cfg, set, b.builds)
	outcome := "posted"
	if outdated {
		switch v.cfg.Outdated {
		case "skip":
			return v.skip(ctx, b, rec, rev, "outdated", "patch set outdated")
		case "comment":
			counted, outcome = false, "commented"
		}
	}
	in := gerrit.Review{Message: Message(set, b.builds, b.replay, outdated), Tag: v.cfg.Tag, Notify: v.cfg.Notify}
	if counted {
		in.Labels = map[string]int{v.cfg.Label: value}
	}
	err = v.gerrit.Review(gctx, set.Project, set.Change, set.Revision, in)
	switch {
	case errors.Is(err, gerrit.ErrClosed): // closed between our read and the post
		return v.skip(ctx, b, rec, rev, "closed", "change closed")
	case stage.IsPermanent(err): // refused: nothing was posted
		return rec, v.release(ctx, b, rev, err)
	case err != nil: // the review may or may not have landed: keep the claim
		return rec, fmt.Errorf("vote %s: %w", b.key, err)
	}
	rec.State, rec.Labels, rec.Message, rec.Digest, rec.Posted = build.VotePosted, in.Labels, in.Message, build.Digest(in.Message), v.now().UTC()
	if outdated {
		rec.Reason = "patch set outdated"
	}
	if _, err := v.votes.Update(ctx, b.key, build.Encode(rec), rev); err != nil {
		// Posted but not recorded: the redelivery finds the review by its marker.
		return rec, fmt.Errorf("record vote %s posted: %w", b.key, err)
	}
	v.votesTotal.WithLabelValues(outcome).Inc()
	b.log.InfoContext(ctx, "vote posted", telemetry.KeyDecision, outcome, "vote", b.key, "labels", in.Labels,
		"outdated", outdated, "revision", set.Revision)
	return rec, nil
}

// skip records that b gets no review, and why.
func (v *Voter) skip(ctx context.Context, b ballot, rec build.Vote, rev uint64, outcome, reason string) (build.Vote, error) {
	rec.State, rec.Reason = build.VoteSkipped, reason
	if _, err := v.votes.Update(ctx, b.key, build.Encode(rec), rev); err != nil {
		return rec, fmt.Errorf("record vote %s skipped: %w", b.key, err)
	}
	v.votesTotal.WithLabelValues(outcome).Inc()
	b.log.InfoContext(ctx, "no vote", telemetry.KeyDecision, "skip", telemetry.KeyReason, reason, "vote", b.key)
	return rec, nil
}

// release gives up the claim at rev after a failure that left nothing on
// Gerrit, so that the redelivery, on any replica, may claim at once. If the
// release fails the claim simply ages out (ClaimTTL).
func (v *Voter) release(ctx context.Context, b ballot, rev uint64, cause error) error {
	if err := v.votes.Delete(ctx, b.key, jetstream.LastRevision(rev)); err != nil {
		b.log.WarnContext(ctx, "vote claim not released; it expires", "vote", b.key, telemetry.KeyErr, err)
	}
	return cause
}

// output is the ci.votes.posted message of a settled vote. Its Msg-Id is the
// votes key, so announcing a vote again is dropped by the duplicate window.
func output(rec build.Vote, m stage.Msg) stage.Out {
	key := VotesKey(rec.BuildSet, rec.Replay)
	h := nats.Header{}
	h.Set(bus.BuildSet, rec.BuildSet)
	bus.SetChange(h, rec.Project, rec.Change, rec.PatchSet)
	if rec.Replay != "" {
		h.Set(bus.Replay, rec.Replay)
		if of := m.Header.Get(bus.ReplayOf); of != "" {
			h.Set(bus.ReplayOf, of)
		}
	}
	return stage.Out{Subject: subject.VotesPosted, MsgID: "vote." + key, Data: build.Encode(rec), Header: h}
}
