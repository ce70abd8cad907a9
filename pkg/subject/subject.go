// Package subject builds every NATS subject and KV key gerritflow uses, and
// holds the one encoder that turns Gerrit names (which contain '/' and '.')
// into safe subject tokens and KV key parts.
package subject

import (
	"fmt"
	"strconv"
	"strings"
)

// Subjects of the pipeline.
const (
	Raw             = "gerrit.raw"
	EventsPrefix    = "gerrit.events."
	EventsAll       = "gerrit.events.>"
	BuildsTriggered = "ci.builds.triggered"
	BuildsCancel    = "ci.builds.cancel"
	BuildsCompleted = "ci.builds.completed"
	BuildsStarted   = "ci.builds.started"
	VotesPosted     = "ci.votes.posted"
	VotesReplay     = "ci.votes.replay" // gfctl replay of ci.votes.posted: the voter posts again
	DLQPrefix       = "gerritflow.dlq."
	// MonitorPoke is core NATS, in no stream: a monitor replica that received
	// a Jenkins notification for a build it does not follow passes the hint
	// to the others. Losing one costs a poll interval, nothing more.
	MonitorPoke = "gerritflow.monitor.poke"
)

// Event is the subject of a normalized Gerrit event of type typ.
func Event(typ string) string { return EventsPrefix + Token(typ) }

// DLQ is the dead-letter subject of service.
func DLQ(service string) string { return DLQPrefix + Token(service) }

// Token encodes s for use as one subject token or one part of a KV key.
// Letters, digits and '-' stay as they are; every other byte, '_' included,
// becomes '_' followed by two upper-case hex digits: "platform/core" becomes
// "platform_2Fcore", "a.b_c" becomes "a_2Eb_5Fc". The result is never empty
// ("" becomes "_") and Untoken reverses it.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02X", c)
	}
	return b.String()
}

// Untoken reverses Token.
func Untoken(t string) (string, error) {
	if t == "_" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '_' {
			b.WriteByte(t[i])
			continue
		}
		if i+2 >= len(t) {
			return "", fmt.Errorf("untoken %q: truncated escape at %d", t, i)
		}
		v, err := strconv.ParseUint(t[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("untoken %q: bad escape at %d", t, i)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// ChangeKey is the key of a change in the changes bucket.
func ChangeKey(project string, change int) string {
	return Token(project) + "." + strconv.Itoa(change)
}

// BuildKey is the key of one job's build of a build set in the builds bucket.
// It is also the GERRITFLOW_BUILD_ID passed to Jenkins.
func BuildKey(buildSet, job string) string { return buildSet + "." + Token(job) }

// BuildsOf is the KV filter matching every build of a build set.
func BuildsOf(buildSet string) string { return buildSet + ".*" }

// ShardKey is the key of a Kinesis shard in the leases and checkpoints buckets.
func ShardKey(stream, shard string) string { return Token(stream) + "." + Token(shard) }
