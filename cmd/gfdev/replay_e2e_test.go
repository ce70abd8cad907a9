package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
)

// TestReplayRedoesVotes is the operator's path after a Gerrit outage that
// lost votes: the real gfctl binary replays ci.builds.completed, and later
// ci.votes.posted, and every change gets its vote back exactly once.
func TestReplayRedoesVotes(t *testing.T) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := startStack(ctx, t, stack.Options{})
	s.ScriptJenkins(300 * time.Millisecond)
	gfctl := buildGfctl(ctx, t)

	var changes []int
	for _, subj := range []string{"Add retries", "[fail] Break the parser", "Tidy the docs"} {
		changes = append(changes, upload(t, s, gerritsim.Upload{Project: "platform/core", Branch: "main", Subject: subj}))
	}
	for _, c := range changes {
		if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	settle(t, s)
	votes := map[int]map[string]int{} // what Gerrit got first, per change
	for i, c := range changes {
		reviews := s.Gerrit.ReviewsFor(c)
		if len(reviews) != 1 {
			t.Fatalf("change %d got %d reviews; want 1", c, len(reviews))
		}
		votes[c] = reviews[0].Input.Labels
		if want := map[int]int{0: 1, 1: -1, 2: 1}[i]; votes[c]["Verified"] != want {
			t.Fatalf("change %d got %v; want Verified %+d", c, votes[c], want)
		}
	}
	since := started.UTC().Format(time.RFC3339Nano)

	// expectVotesBack waits until every change has exactly one review again,
	// with the labels of the first vote and the replay's marker.
	expectVotesBack := func(replay string) {
		t.Helper()
		for _, c := range changes {
			if err := s.WaitReviews(ctx, c, 1, 2*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		settle(t, s)
		for _, c := range changes {
			reviews := s.Gerrit.ReviewsFor(c)
			if len(reviews) != 1 {
				t.Errorf("change %d got %d reviews after replay %s; want 1", c, len(reviews), replay)
				continue
			}
			r := reviews[0]
			if !maps.Equal(r.Input.Labels, votes[c]) || !strings.Contains(r.Input.Message, "replay "+replay) {
				t.Errorf("change %d: replay %s posted %v %q; want %v and the replay's marker", c, replay, r.Input.Labels, r.Input.Message, votes[c])
			}
		}
	}

	t.Run("replay of ci.builds.completed posts every lost vote once", func(t *testing.T) {
		s.Gerrit.Wipe() // the outage: Gerrit lost the votes

		var dry replaySummary
		gfctlJSON(ctx, t, gfctl, s, &dry, "replay", "ci.builds.completed", "--since", since, "--id", "redo-1", "--dry-run")
		if dry.Selected != 2*len(changes) || dry.Published != 0 || len(dry.Messages) != dry.Selected {
			t.Fatalf("dry run = %+v; want %d completions listed, nothing published", dry, 2*len(changes))
		}
		settle(t, s)
		if n := len(s.Gerrit.Reviews()); n != 0 {
			t.Fatalf("Gerrit got %d reviews after a dry run; want none", n)
		}

		var sum replaySummary
		gfctlJSON(ctx, t, gfctl, s, &sum, "replay", "ci.builds.completed", "--since", since, "--id", "redo-1")
		if sum.Published != 2*len(changes) || sum.Errors != 0 {
			t.Fatalf("replay = %+v; want %d published", sum, 2*len(changes))
		}
		expectVotesBack("redo-1")

		// The same replay again: the stream drops every copy, Gerrit gets nothing.
		gfctlJSON(ctx, t, gfctl, s, &sum, "replay", "ci.builds.completed", "--since", since, "--id", "redo-1")
		if sum.Published != 0 || sum.Duplicates != sum.Selected || sum.Errors != 0 {
			t.Errorf("replay redo-1 again = %+v; want every copy a duplicate", sum)
		}
		settle(t, s)
		if n := len(s.Gerrit.Reviews()); n != len(changes) {
			t.Errorf("Gerrit holds %d reviews after replaying redo-1 twice; want %d", n, len(changes))
		}
	})

	t.Run("replay of ci.votes.posted posts every lost vote once", func(t *testing.T) {
		s.Gerrit.Wipe()
		var sum replaySummary
		gfctlJSON(ctx, t, gfctl, s, &sum, "replay", "ci.votes.posted", "--since", since, "--id", "redo-2")
		// The original votes and those of redo-1: one review per build set all the same.
		if sum.Selected != 2*len(changes) || sum.Published != sum.Selected || sum.Errors != 0 {
			t.Fatalf("replay = %+v; want %d votes published to ci.votes.replay", sum, 2*len(changes))
		}
		if n := natstest.Count(t, s.JS, "ci.votes.replay"); n != sum.Published {
			t.Errorf("ci.votes.replay holds %d messages; want %d", n, sum.Published)
		}
		expectVotesBack("redo-2")
	})

	t.Run("nothing went to a DLQ", func(t *testing.T) {
		if n := natstest.Count(t, s.JS, "gerritflow.dlq.>"); n != 0 {
			t.Errorf("DLQ holds %d messages; want 0", n)
		}
	})
}

// replaySummary is the part of gfctl replay --json the test reads.
type replaySummary struct {
	Selected, Published, Duplicates, Skipped, Errors int
	Messages                                         []json.RawMessage
}

// buildGfctl builds the operator's binary from the workspace, as an operator
// would run it.
func buildGfctl(ctx context.Context, t *testing.T) string {
	t.Helper()
	root, err := workspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "gfctl")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gfctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gfctl: %v\n%s", err, out)
	}
	return bin
}

func workspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// gfctlJSON runs the gfctl binary against the stack's NATS with --json and
// decodes what it prints.
func gfctlJSON(ctx context.Context, t *testing.T, bin string, s *stack.Stack, v any, args ...string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "--nats", s.NATS.ClientURL(), "--json")...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("gfctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		t.Fatalf("gfctl %s printed %q: %v", strings.Join(args, " "), out.String(), err)
	}
	if testing.Verbose() {
		t.Logf("gfctl %s:\n%s%s", strings.Join(args, " "), errOut.String(), out.String())
	}
}
