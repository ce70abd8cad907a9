package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// triggerResult is what gfctl trigger did.
type triggerResult struct {
	ReplayID  string `json:"replay_id"`
	BuildSet  string `json:"buildset"` // the id the trigger gives the new build set
	Change    int    `json:"change"`
	PatchSet  int    `json:"patchset"`
	Project   string `json:"project"`
	EventSeq  uint64 `json:"event_seq"` // of the patchset-created event in GERRIT_EVENTS
	EventID   string `json:"event_id"`
	MsgID     string `json:"msg_id"` // of the replayed copy
	DryRun    bool   `json:"dry_run"`
	Duplicate bool   `json:"duplicate,omitempty"` // the stream already had it (same --id)
	Warning   string `json:"warning,omitempty"`
}

func (a *app) triggerCmd() *cobra.Command {
	var (
		project, id string
		dryRun      bool
	)
	cmd := &cobra.Command{
		Use:   "trigger CHANGE [PATCHSET]",
		Short: "Start a build set by hand: replay the patch set's patchset-created event (latest patch set if omitted)",
		Long: `Finds the change's patchset-created event in GERRIT_EVENTS and replays it with a
fresh replay id: the trigger starts a new build set for it, as it does for any
replayed event, and the voter posts its vote when the builds are done. Prints the
replay id and the id of the build set the trigger will create (gfctl status CHANGE
shows it).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := changeNumber(args[0])
			if err != nil {
				return err
			}
			ps := 0
			if len(args) == 2 {
				if ps, err = strconv.Atoi(args[1]); err != nil || ps <= 0 {
					return fmt.Errorf("patch set %q: want a number", args[1])
				}
			}
			if id, err = a.replayID(id); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			res, err := trigger(ctx, s, n, ps, project, id, dryRun)
			if err != nil {
				return err
			}
			if res.Warning != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "gfctl: warning:", res.Warning)
			}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			verb := "replayed"
			if dryRun {
				verb = "would replay (dry run)"
			}
			t := newTable(w, "REPLAY", "BUILD SET", "CHANGE", "PS", "PROJECT", "EVENT SEQ")
			t.row(res.ReplayID, res.BuildSet, strconv.Itoa(res.Change), strconv.Itoa(res.PatchSet), res.Project, strconv.FormatUint(res.EventSeq, 10))
			if err := t.flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "\n%s patchset-created of change %d patch set %d; follow it with: gfctl status %d\n", verb, res.Change, res.PatchSet, res.Change)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&project, "project", "", "the change's Gerrit project (when two projects share the number)")
	f.StringVar(&id, "id", "", "replay id (default r-<UTC time>-<random>)")
	f.BoolVar(&dryRun, "dry-run", false, "find the event and print the ids; publish nothing")
	return cmd
}

// trigger replays the patchset-created event of change n, patch set ps (the
// latest found if 0), with replay id.
func trigger(ctx context.Context, s *session, n, ps int, project, id string, dryRun bool) (*triggerResult, error) {
	spec := replaySpec{Change: n, Patchset: ps, Project: project}
	var best *storedMsg
	err := scan(ctx, s.js, streams.GerritEvents, scanRange{Filter: subject.Event(event.TypePatchsetCreated)},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
			if !spec.matches(m.Headers()) {
				return nil
			}
			c := stored(m, md)
			if best == nil || better(c, *best) {
				best = &c
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	if best == nil {
		what := fmt.Sprintf("change %d", n)
		if ps > 0 {
			what += fmt.Sprintf(" patch set %d", ps)
		}
		return nil, fmt.Errorf("%s: no patchset-created event in %s (older than the stream's max age, or never received)", what, streams.GerritEvents)
	}
	ev, err := event.Parse(best.Data, 0)
	if err != nil {
		return nil, fmt.Errorf("patchset-created at seq %d: %w", best.Seq, err)
	}
	res := &triggerResult{
		ReplayID: id, BuildSet: build.SetID(ev.ChangeNumber(), ev.PatchSetNumber(), ev.ID(), id),
		Change: ev.ChangeNumber(), PatchSet: ev.PatchSetNumber(), Project: ev.ProjectName(),
		EventSeq: best.Seq, EventID: ev.ID(), MsgID: replayMsgID(streams.GerritEvents, *best, id), DryRun: dryRun,
	}
	res.Warning = checkChange(ctx, s, res)
	if dryRun {
		return res, nil
	}
	r := &replayer{js: s.js, tracer: s.tel.Tracer, window: 1,
		sum: replaySummary{ReplayID: id, Subject: best.Subject, Stream: streams.GerritEvents}}
	if err := r.add(ctx, *best); err != nil {
		return nil, err
	}
	if err := r.finish(ctx); err != nil {
		return nil, err
	}
	if r.sum.Errors > 0 {
		return nil, errors.New(r.sum.FirstError)
	}
	res.Duplicate = r.sum.Duplicates > 0
	return res, nil
}

// better reports whether a is the event to replay rather than b: a later
// patch set; for one patch set, Gerrit's own event before a replayed copy.
func better(a, b storedMsg) bool {
	pa, _ := strconv.Atoi(a.Header.Get(bus.GerritPatchset))
	pb, _ := strconv.Atoi(b.Header.Get(bus.GerritPatchset))
	if pa != pb {
		return pa > pb
	}
	return a.Header.Get(bus.Replay) == "" && b.Header.Get(bus.Replay) != ""
}

// checkChange says why the trigger may start nothing for res: the trigger
// skips outdated patch sets and closed changes. It is advice, never an error.
func checkChange(ctx context.Context, s *session, res *triggerResult) string {
	kv, err := s.js.KeyValue(ctx, streams.BucketChanges)
	if err != nil {
		return ""
	}
	_, c, err := findChange(ctx, kv, res.Change, res.Project)
	if err != nil {
		return ""
	}
	switch {
	case c.Status != "" && c.Status != build.ChangeNew:
		return fmt.Sprintf("change %d is %s: the trigger starts no build for it", res.Change, c.Status)
	case c.Latest > res.PatchSet:
		return fmt.Sprintf("patch set %d is outdated (latest %d): the trigger starts no build for it", res.PatchSet, c.Latest)
	}
	return ""
}
