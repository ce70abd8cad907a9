package chaos

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/streams"
)

// settle waits until the pipeline is quiet: gerrit.raw holds every record
// written so far (records() is read on every round: the voter's reviews come
// back as events), no consumer has anything pending or unacked, and Jenkins
// has nothing queued or building — three rounds in a row, a second apart. It
// returns how it left things when timeout passed first.
func settle(ctx context.Context, s *stack.Stack, jobs []config.Job, records func() int, timeout time.Duration, log io.Writer) (bool, string) {
	start := time.Now()
	deadline := start.Add(timeout)
	quiet, state := 0, ""
	lastLog := start
	for {
		var busy []string
		want := records()
		if raw, err := streamMsgs(ctx, s, streams.GerritRaw); err != nil {
			busy = append(busy, err.Error())
		} else if raw < want {
			busy = append(busy, fmt.Sprintf("gerrit.raw %d of %d records", raw, want))
		}
		if cs, err := consumerStates(ctx, s.JS); err != nil {
			busy = append(busy, err.Error())
		} else {
			for _, c := range cs {
				if c.Pending > 0 || c.AckPending > 0 {
					busy = append(busy, fmt.Sprintf("%s: %d pending, %d unacked", c.Name, c.Pending, c.AckPending))
				}
			}
		}
		if n := inJenkins(s, jobs); n > 0 {
			busy = append(busy, fmt.Sprintf("jenkins: %d queued or building", n))
		}
		if len(busy) == 0 {
			quiet++
			if quiet >= 3 {
				return true, "quiet"
			}
		} else {
			quiet, state = 0, strings.Join(busy, "; ")
			if time.Since(lastLog) >= 15*time.Second {
				lastLog = time.Now()
				fmt.Fprintf(log, "chaos: settling for %v: %s\n", time.Since(start).Round(time.Second), state)
			}
		}
		if time.Now().After(deadline) {
			return false, state
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err().Error()
		case <-time.After(time.Second):
		}
	}
}

func streamMsgs(ctx context.Context, s *stack.Stack, name string) (int, error) {
	st, err := s.JS.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

// inJenkins counts the builds of the configured jobs that wait or run.
func inJenkins(s *stack.Stack, jobs []config.Job) int {
	n := 0
	seen := map[string]bool{}
	for _, j := range jobs {
		if seen[j.JenkinsJob] {
			continue
		}
		seen[j.JenkinsJob] = true
		n += len(s.Jenkins.Queued(j.JenkinsJob))
		for _, b := range s.Jenkins.Builds(j.JenkinsJob) {
			if b.Building {
				n++
			}
		}
	}
	return n
}
