// Package build holds the records of the buildsets, builds and votes KV
// buckets and the messages of ci.builds.* and ci.votes.*: the contract between
// trigger, monitor, voter and gfctl.
package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// State of a build.
type State string

// Build states, in order. A build record is written in StateTriggering before
// Jenkins is asked, so that after a crash the trigger looks for the build it
// may have started instead of starting another.
const (
	StateTriggering State = "triggering" // record written; Jenkins may or may not have been asked
	StateQueued     State = "queued"     // Jenkins gave a queue item
	StateRunning    State = "running"    // the queue item became a build
	StateCompleted  State = "completed"  // a result is known; ci.builds.completed follows
)

// Results beyond Jenkins' own (SUCCESS, UNSTABLE, FAILURE, ABORTED, NOT_BUILT).
const (
	ResultSuccess  = "SUCCESS"
	ResultUnstable = "UNSTABLE"
	ResultFailure  = "FAILURE"
	ResultAborted  = "ABORTED"
	ResultNotBuilt = "NOT_BUILT"
	ResultTimedOut = "TIMED_OUT" // gerritflow aborted it after monitor.build_timeout
	ResultLost     = "LOST"      // Jenkins no longer knows the build
	ResultCanceled = "CANCELED"  // superseded or abandoned before it ran
)

// States of a build set.
const (
	SetRunning    = "running"
	SetSuperseded = "superseded" // a newer patch set arrived
	SetAbandoned  = "abandoned"
	SetVoted      = "voted"
	// SetClosed: the change merged before every job of the set started (a
	// delivery failed half-way and its redelivery found the change closed).
	// No vote is owed; the builds that did start are cancelled.
	SetClosed = "closed"
)

// Job is one job of a build set.
type Job struct {
	Name       string `json:"name"`
	JenkinsJob string `json:"jenkins_job"`
	Voting     bool   `json:"voting"`
}

// Set is the value of buildsets/<id>.
type Set struct {
	ID          string    `json:"id"`
	Project     string    `json:"project"`
	Branch      string    `json:"branch"`
	Change      int       `json:"change"`
	PatchSet    int       `json:"patchset"`
	Revision    string    `json:"revision"`
	Ref         string    `json:"ref,omitempty"`
	ChangeID    string    `json:"change_id,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	URL         string    `json:"url,omitempty"`
	EventType   string    `json:"event_type"`
	EventID     string    `json:"event_id"`
	Replay      string    `json:"replay,omitempty"`
	Jobs        []Job     `json:"jobs"`
	State       string    `json:"state"`
	Reason      string    `json:"reason,omitempty"`
	Created     time.Time `json:"created"`
	Traceparent string    `json:"traceparent,omitempty"` // the triggering event's trace, for links
}

// Build is the value of builds/<buildset>.<job-token>.
type Build struct {
	BuildSet    string        `json:"buildset"`
	Job         string        `json:"job"`
	JenkinsJob  string        `json:"jenkins_job"`
	BuildID     string        `json:"build_id"` // GERRITFLOW_BUILD_ID
	Voting      bool          `json:"voting"`
	State       State         `json:"state"`
	QueueID     int64         `json:"queue_id,omitempty"`
	Number      int64         `json:"number,omitempty"`
	URL         string        `json:"url,omitempty"`
	Result      string        `json:"result,omitempty"`
	Duration    time.Duration `json:"duration,omitempty"`
	Triggered   time.Time     `json:"triggered"`
	Finished    time.Time     `json:"finished,omitempty"`
	Cancel      string        `json:"cancel,omitempty"` // reason a cancel was asked for
	Traceparent string        `json:"traceparent,omitempty"`
}

// Triggered is the body of ci.builds.triggered: Jenkins accepted the build.
type Triggered struct {
	BuildSet   string `json:"buildset"`
	Job        string `json:"job"`
	JenkinsJob string `json:"jenkins_job"`
	BuildID    string `json:"build_id"`
	QueueID    int64  `json:"queue_id"`
	Project    string `json:"project"`
	Change     int    `json:"change"`
	PatchSet   int    `json:"patchset"`
	Revision   string `json:"revision"`
	Voting     bool   `json:"voting"`
}

// Cancel is the body of ci.builds.cancel: stop this build (superseded, abandoned, merged).
type Cancel struct {
	BuildSet   string `json:"buildset"`
	Job        string `json:"job"`
	JenkinsJob string `json:"jenkins_job"`
	BuildID    string `json:"build_id"`
	Reason     string `json:"reason"`
}

// Completed is the body of ci.builds.completed.
type Completed struct {
	BuildSet   string        `json:"buildset"`
	Job        string        `json:"job"`
	JenkinsJob string        `json:"jenkins_job"`
	BuildID    string        `json:"build_id"`
	Result     string        `json:"result"`
	Number     int64         `json:"number,omitempty"`
	URL        string        `json:"url,omitempty"`
	Duration   time.Duration `json:"duration"`
	Voting     bool          `json:"voting"`
}

// Vote states.
const (
	VotePosting = "posting" // claimed; the review may or may not have reached Gerrit
	VotePosted  = "posted"
	VoteSkipped = "skipped" // closed change or outdated with vote.outdated: skip
)

// Vote is the value of votes/<key> and the body of ci.votes.posted.
type Vote struct {
	BuildSet string         `json:"buildset"`
	Replay   string         `json:"replay,omitempty"`
	Project  string         `json:"project"`
	Change   int            `json:"change"`
	PatchSet int            `json:"patchset"`
	Revision string         `json:"revision"`
	Labels   map[string]int `json:"labels,omitempty"`
	Message  string         `json:"message"`
	Digest   string         `json:"digest"` // sha256 of the message
	State    string         `json:"state"`
	Reason   string         `json:"reason,omitempty"`
	Owner    string         `json:"owner,omitempty"` // replica that claimed it
	Claimed  time.Time      `json:"claimed"`
	Posted   time.Time      `json:"posted,omitempty"`
}

// SetID derives a build set id from the triggering event's identity and the
// replay id (empty unless replayed). It is never random: the same event read
// again finds the same build set.
func SetID(change, patchset int, eventID, replay string) string {
	sum := sha256.Sum256([]byte(eventID + "\x00" + replay))
	h := hex.EncodeToString(sum[:])[:16]
	if change <= 0 {
		return "ref-" + h
	}
	return fmt.Sprintf("%d-%d-%s", change, patchset, h)
}

// Digest is the hex sha256 of s.
func Digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Encode marshals v (records and messages never fail to encode).
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("build: encode %T: %v", v, err))
	}
	return b
}

// Decode unmarshals data into v, naming the type on error.
func Decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// Change statuses, as Gerrit names them.
const (
	ChangeNew       = "NEW"
	ChangeMerged    = "MERGED"
	ChangeAbandoned = "ABANDONED"
)

// Change is the value of changes/<project-token>.<number>: what the trigger
// knows of a change, reconciled by CAS whatever order events arrive in.
type Change struct {
	Project   string    `json:"project"`
	Number    int       `json:"number"`
	Latest    int       `json:"latest_patchset"`
	Status    string    `json:"status"`
	WIP       bool      `json:"wip,omitempty"`
	BuildSets []SetRef  `json:"buildsets,omitempty"` // newest last; at most MaxSetRefs
	Updated   time.Time `json:"updated"`
}

// SetRef names one build set of a change.
type SetRef struct {
	ID       string `json:"id"`
	PatchSet int    `json:"patchset"`
	Event    string `json:"event"`
}

// MaxSetRefs bounds the build sets a change record remembers.
const MaxSetRefs = 50
