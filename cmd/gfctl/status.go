package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// statusView is what gfctl status prints: a change, its build sets, their
// builds and votes, as the KV buckets hold them.
type statusView struct {
	Key       string       `json:"key"`
	Change    build.Change `json:"change"`
	BuildSets []setView    `json:"buildsets"`
}

type setView struct {
	Ref build.SetRef `json:"ref"`
	// Set is nil when the record is gone (older than the bucket's max age).
	Set    *build.Set    `json:"set"`
	Builds []build.Build `json:"builds"`
	Votes  []voteView    `json:"votes"`
}

type voteView struct {
	Key  string     `json:"key"`
	Vote build.Vote `json:"vote"`
}

func (a *app) statusCmd() *cobra.Command {
	var project string
	cmd := &cobra.Command{
		Use:   "status CHANGE",
		Short: "Show a change's build sets, their builds and votes (from the KV buckets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := changeNumber(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			v, err := readStatus(ctx, s, n, project)
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			return printStatus(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVar(&project, "project", "", "the change's Gerrit project (needed only when two projects share the number)")
	return cmd
}

func changeNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("change %q: want a change number", s)
	}
	return n, nil
}

// errUnknownChange is the error of a change the changes bucket does not hold.
var errUnknownChange = errors.New("unknown change")

// findChange returns the key and record of change n in the changes bucket.
// Without a project it looks for the one key ending in ".<n>".
func findChange(ctx context.Context, changes jetstream.KeyValue, n int, project string) (string, build.Change, error) {
	var key string
	if project != "" {
		key = subject.ChangeKey(project, n)
	} else {
		// Keys are <project-token>.<number>, and a token holds no '.'.
		lister, err := changes.ListKeysFiltered(ctx, "*."+strconv.Itoa(n))
		if err != nil {
			return "", build.Change{}, fmt.Errorf("list kv %s: %w", streams.BucketChanges, err)
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		if err := ctx.Err(); err != nil {
			return "", build.Change{}, fmt.Errorf("list kv %s: %w", streams.BucketChanges, err)
		}
		switch len(keys) {
		case 0:
			return "", build.Change{}, fmt.Errorf("change %d: %w: no record in KV %s (no event of it was processed, or it is older than the bucket's max age)", n, errUnknownChange, streams.BucketChanges)
		case 1:
			key = keys[0]
		default:
			var projects []string
			for _, k := range keys {
				p, _ := subject.Untoken(strings.TrimSuffix(k, "."+strconv.Itoa(n)))
				projects = append(projects, p)
			}
			sort.Strings(projects)
			return "", build.Change{}, fmt.Errorf("change %d is known in %d projects (%s): pass --project", n, len(keys), strings.Join(projects, ", "))
		}
	}
	e, err := changes.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", build.Change{}, fmt.Errorf("change %d of %s: %w: no record %s in KV %s", n, project, errUnknownChange, key, streams.BucketChanges)
	}
	if err != nil {
		return "", build.Change{}, fmt.Errorf("read kv %s/%s: %w", streams.BucketChanges, key, err)
	}
	var c build.Change
	if err := build.Decode(e.Value(), &c); err != nil {
		return "", build.Change{}, fmt.Errorf("read kv %s/%s: %w", streams.BucketChanges, key, err)
	}
	return key, c, nil
}

func readStatus(ctx context.Context, s *session, n int, project string) (*statusView, error) {
	kvs := map[string]jetstream.KeyValue{}
	for _, b := range []string{streams.BucketChanges, streams.BucketBuildSets, streams.BucketBuilds, streams.BucketVotes} {
		kv, err := s.kv(ctx, b)
		if err != nil {
			return nil, err
		}
		kvs[b] = kv
	}
	key, c, err := findChange(ctx, kvs[streams.BucketChanges], n, project)
	if err != nil {
		return nil, err
	}
	v := &statusView{Key: key, Change: c, BuildSets: []setView{}}
	for _, ref := range c.BuildSets {
		sv := setView{Ref: ref, Builds: []build.Build{}, Votes: []voteView{}}
		var set build.Set
		found, err := get(ctx, kvs[streams.BucketBuildSets], ref.ID, &set)
		if err != nil {
			return nil, err
		}
		if found {
			sv.Set = &set
			for _, j := range set.Jobs {
				b := build.Build{BuildSet: set.ID, Job: j.Name, JenkinsJob: j.JenkinsJob, Voting: j.Voting}
				if _, err := get(ctx, kvs[streams.BucketBuilds], subject.BuildKey(set.ID, j.Name), &b); err != nil {
					return nil, err
				}
				sv.Builds = append(sv.Builds, b)
			}
		}
		if sv.Votes, err = votesOf(ctx, kvs[streams.BucketVotes], ref.ID); err != nil {
			return nil, err
		}
		v.BuildSets = append(v.BuildSets, sv)
	}
	return v, nil
}

// get decodes the record of key into v; found is false when there is none.
func get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (found bool, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read kv %s/%s: %w", kv.Bucket(), key, err)
	}
	if err := build.Decode(e.Value(), v); err != nil {
		return false, fmt.Errorf("read kv %s/%s: %w", kv.Bucket(), key, err)
	}
	return true, nil
}

// votesOf returns the votes of a build set: votes/<set>, then one per replay
// (votes/<set>.<replay-token>) in the order they were claimed.
func votesOf(ctx context.Context, votes jetstream.KeyValue, setID string) ([]voteView, error) {
	lister, err := votes.ListKeysFiltered(ctx, setID, setID+".*")
	if err != nil {
		return nil, fmt.Errorf("list kv %s: %w", streams.BucketVotes, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	out := []voteView{}
	for _, k := range keys {
		var vote build.Vote
		found, err := get(ctx, votes, k, &vote)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, voteView{Key: k, Vote: vote})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Key == setID) != (out[j].Key == setID) {
			return out[i].Key == setID
		}
		return out[i].Vote.Claimed.Before(out[j].Vote.Claimed)
	})
	return out, nil
}

func printStatus(w io.Writer, v *statusView) error {
	c := v.Change
	wip := "no"
	if c.WIP {
		wip = "yes"
	}
	t := newTable(w, "CHANGE", "PROJECT", "STATUS", "LATEST PS", "WIP", "UPDATED")
	t.row(strconv.Itoa(c.Number), c.Project, c.Status, strconv.Itoa(c.Latest), wip, stamp(c.Updated))
	if err := t.flush(); err != nil {
		return err
	}
	if len(v.BuildSets) == 0 {
		_, err := fmt.Fprintln(w, "\nno build sets")
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "BUILD SET", "PS", "EVENT", "REPLAY", "STATE", "JOBS", "CREATED")
	for _, sv := range v.BuildSets {
		if sv.Set == nil {
			t.row(sv.Ref.ID, strconv.Itoa(sv.Ref.PatchSet), sv.Ref.Event, "", "(record expired)", "", "")
			continue
		}
		s := sv.Set
		state := s.State
		if s.Reason != "" {
			state += " (" + s.Reason + ")"
		}
		t.row(s.ID, strconv.Itoa(s.PatchSet), s.EventType, s.Replay, state, strconv.Itoa(len(s.Jobs)), stamp(s.Created))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "BUILD SET", "JOB", "STATE", "RESULT", "DURATION", "URL")
	for _, sv := range v.BuildSets {
		for _, b := range sv.Builds {
			job := b.Job
			if !b.Voting {
				job += " (non-voting)"
			}
			state := string(b.State)
			if state == "" {
				state = "(not started)"
			}
			t.row(b.BuildSet, job, state, b.Result, duration(b.Duration), b.URL)
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t = newTable(w, "VOTE", "STATE", "LABELS", "POSTED", "REASON")
	n := 0
	for _, sv := range v.BuildSets {
		for _, vv := range sv.Votes {
			l := labels(vv.Vote.Labels)
			if l == "" && vv.Vote.State == build.VotePosted {
				l = "(message only)"
			}
			t.row(vv.Key, vv.Vote.State, l, stamp(vv.Vote.Posted), vv.Vote.Reason)
			n++
		}
	}
	if n == 0 {
		t.row("(none yet)", "", "", "", "")
	}
	return t.flush()
}

// inFlight is one row of gfctl builds.
type inFlight struct {
	Key        string      `json:"key"`
	AgeSeconds float64     `json:"age_seconds"`
	Build      build.Build `json:"build"`
}

func (a *app) buildsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "builds",
		Short: "List the builds in flight (not completed), oldest first, with their age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			kv, err := s.kv(ctx, streams.BucketBuilds)
			if err != nil {
				return err
			}
			rows, err := buildsInFlight(ctx, kv, a.now())
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), rows)
			}
			w := cmd.OutOrStdout()
			if len(rows) == 0 {
				_, err := fmt.Fprintln(w, "no builds in flight")
				return err
			}
			t := newTable(w, "AGE", "STATE", "JOB", "BUILD SET", "CHANGE", "QUEUE", "NUMBER", "URL")
			for _, r := range rows {
				b := r.Build
				change, _, _ := strings.Cut(b.BuildSet, "-")
				if _, err := strconv.Atoi(change); err != nil {
					change = "" // ref-<hash>: a build set of no change
				}
				t.row(age(time.Duration(r.AgeSeconds*float64(time.Second))), string(b.State), b.Job, b.BuildSet, change,
					nonZero(b.QueueID), nonZero(b.Number), b.URL)
			}
			return t.flush()
		},
	}
}

func nonZero(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// buildsInFlight reads every build record (one watch of the bucket, not one
// Get per key) and returns those not completed, oldest first.
func buildsInFlight(ctx context.Context, kv jetstream.KeyValue, now time.Time) ([]inFlight, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	rows := []inFlight{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("read kv %s: %w", kv.Bucket(), ctx.Err())
		}
		if e == nil { // every current record was delivered
			break
		}
		var b build.Build
		if err := build.Decode(e.Value(), &b); err != nil {
			return nil, fmt.Errorf("read kv %s/%s: %w", kv.Bucket(), e.Key(), err)
		}
		if b.State == build.StateCompleted {
			continue
		}
		since := b.Triggered
		if since.IsZero() {
			since = e.Created()
		}
		rows = append(rows, inFlight{Key: e.Key(), AgeSeconds: now.Sub(since).Seconds(), Build: b})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].AgeSeconds > rows[j].AgeSeconds })
	return rows, nil
}
