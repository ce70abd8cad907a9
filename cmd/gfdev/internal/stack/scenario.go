package stack

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/sim"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// ScriptJenkins makes the simulated jobs' results follow the change subject
// (sim.ScriptBySubject): "[fail]" fails, "[flaky]" fails the first time and
// passes on recheck. lint always passes, in half the time.
func (s *Stack) ScriptJenkins(duration time.Duration) {
	sim.ScriptBySubject(s.Jenkins, "folder/unit-tests", duration)
	s.Jenkins.Script("lint", func(map[string]string) jenkinssim.Outcome {
		return jenkinssim.Outcome{Result: "SUCCESS", Duration: duration / 2, QueueDelay: 100 * time.Millisecond}
	})
}

// Developer is the account the demo's changes come from.
var Developer = gerritsim.Account{Name: "Dana Developer", Email: "dana@example.com", Username: "dana"}

// Demo plays the scenario of `make dev`: one change passes, one fails, one
// fails and passes after a "recheck" comment. It returns when every expected
// vote reached Gerrit.
func (s *Stack) Demo(ctx context.Context, w io.Writer) error {
	s.ScriptJenkins(1500 * time.Millisecond)
	upload := func(subject string) (int, error) {
		c, _, _, err := s.Gerrit.Upload(gerritsim.Upload{Project: "platform/core", Branch: "main", Subject: subject, Uploader: Developer})
		if err == nil {
			fmt.Fprintf(w, "gerrit: change %d uploaded: %q\n", c, subject)
		}
		return c, err
	}
	pass, err := upload("Add retries to the artifact uploader")
	if err != nil {
		return err
	}
	fail, err := upload("[fail] Drop the null check in the parser")
	if err != nil {
		return err
	}
	flaky, err := upload("[flaky] Speed up the cache warm-up")
	if err != nil {
		return err
	}
	for _, c := range []struct{ change, votes int }{{pass, 1}, {fail, 1}, {flaky, 1}} {
		if err := s.WaitReviews(ctx, c.change, c.votes, 90*time.Second); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "gerrit: a reviewer comments \"recheck\" on change %d\n", flaky)
	if _, err := s.Gerrit.Comment(flaky, 0, gerritsim.Account{Name: "Rita Reviewer", Email: "rita@example.com", Username: "rita"}, "recheck", nil); err != nil {
		return err
	}
	if err := s.WaitReviews(ctx, flaky, 2, 90*time.Second); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nReviews Gerrit received:")
	for _, c := range []int{pass, fail, flaky} {
		for _, r := range s.Gerrit.ReviewsFor(c) {
			fmt.Fprintf(w, "  change %d patch set %d revision %s: %s (tag %s)\n", c, r.PatchSet, short(r.Revision, 10), labels(r.Input.Labels), r.Input.Tag)
		}
	}
	return nil
}

func labels(l map[string]int) string {
	if len(l) == 0 {
		return "message only"
	}
	var parts []string
	for k, v := range l {
		parts = append(parts, k+" "+signed(v))
	}
	return strings.Join(parts, ", ")
}

func signed(v int) string {
	if v > 0 {
		return "+" + strconv.Itoa(v)
	}
	return strconv.Itoa(v)
}

// WaitReviews waits until Gerrit holds at least n reviews from the CI account on change.
func (s *Stack) WaitReviews(ctx context.Context, change, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if got := len(s.Gerrit.ReviewsFor(change)); got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("change %d: %d of %d reviews after %v (logs in %s)", change, len(s.Gerrit.ReviewsFor(change)), n, timeout, s.opts.Dir+"/logs")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
