package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
)

// Watch prints each message of the pipeline as it happens, one line per
// stage, until ctx ends: how one change travels from Kinesis to its vote.
func (s *Stack) Watch(ctx context.Context, w io.Writer) error {
	start := time.Now()
	var mu sync.Mutex
	print := func(change, stage, text string) {
		mu.Lock()
		defer mu.Unlock()
		if change == "" {
			change = "-"
		}
		fmt.Fprintf(w, "[%6.2fs] change %-4s %-8s %s\n", time.Since(start).Seconds(), change, stage, text)
	}
	var subs []*nats.Subscription
	for _, subj := range []string{"gerrit.>", "ci.>", "gerritflow.dlq.>"} {
		sub, err := s.NC.Subscribe(subj, func(m *nats.Msg) { describe(m, print) })
		if err != nil {
			return err
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	return nil
}

func describe(m *nats.Msg, print func(change, stage, text string)) {
	h := m.Header
	change := h.Get(bus.GerritChange)
	if ps := h.Get(bus.GerritPatchset); ps != "" {
		change += "/" + ps
	}
	switch {
	case m.Subject == "gerrit.raw":
		seq := h.Get(bus.KinesisSequence) // sequence numbers share a long prefix: show the end
		if len(seq) > 8 {
			seq = "…" + seq[len(seq)-8:]
		}
		print(change, "bridge", fmt.Sprintf("Kinesis record %s %s (%s) -> gerrit.raw", h.Get(bus.KinesisShard), seq, h.Get(bus.KinesisPartition)))
	case strings.HasPrefix(m.Subject, "gerrit.events."):
		print(change, "parser", fmt.Sprintf("%s %s -> %s", h.Get(bus.GerritEventType), h.Get(bus.GerritProject), m.Subject))
	case m.Subject == "ci.builds.triggered":
		var t build.Triggered
		_ = json.Unmarshal(m.Data, &t)
		print(change, "trigger", fmt.Sprintf("%s -> Jenkins %s queue item %d (build set %s)", t.Job, t.JenkinsJob, t.QueueID, t.BuildSet))
	case m.Subject == "ci.builds.cancel":
		var c build.Cancel
		_ = json.Unmarshal(m.Data, &c)
		print(change, "trigger", fmt.Sprintf("cancel %s: %s", c.Job, c.Reason))
	case m.Subject == "ci.builds.completed":
		var c build.Completed
		_ = json.Unmarshal(m.Data, &c)
		voting := ""
		if !c.Voting {
			voting = " (non-voting)"
		}
		print(change, "monitor", fmt.Sprintf("%s %s in %v %s%s", c.Job, c.Result, c.Duration.Round(time.Millisecond), c.URL, voting))
	case m.Subject == "ci.votes.posted":
		var v build.Vote
		_ = json.Unmarshal(m.Data, &v)
		what := "message only"
		for l, val := range v.Labels {
			what = fmt.Sprintf("%s %+d", l, val)
		}
		if v.State != build.VotePosted {
			what = v.State + " (" + v.Reason + ")"
		}
		print(change, "voter", fmt.Sprintf("Gerrit review on %s: %s", short(v.Revision, 10), what))
	case strings.HasPrefix(m.Subject, "gerritflow.dlq."):
		print(change, "DLQ", fmt.Sprintf("%s: %s", h.Get(bus.Stage), h.Get(bus.Error)))
	}
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
