package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

// Accounts of the workload (none of them is the CI account).
var (
	Developer = gerritsim.Account{Name: "Dana Developer", Email: "dana@example.com", Username: "dana"}
	Reviewer  = gerritsim.Account{Name: "Rita Reviewer", Email: "rita@example.com", Username: "rita"}
)

// Actions of the workload, for the report.
const (
	ActNewChange    = "new change"
	ActPatchSet     = "new patch set"
	ActRecheck      = "recheck (current patch set)"
	ActRecheckOld   = "recheck (older patch set)"
	ActComment      = "comment matching nothing"
	ActAbandon      = "abandon"
	ActMerge        = "merge"
	ActDuplicate    = "duplicate record"
	ActGarbage      = "garbage record"
	ActUnconfigured = "new change, unconfigured project"
)

// ActionOrder is how the report lists the actions.
var ActionOrder = []string{ActNewChange, ActUnconfigured, ActPatchSet, ActRecheck, ActRecheckOld, ActComment,
	ActAbandon, ActMerge, ActDuplicate, ActGarbage}

// weights of the actions, in percent (the rest of a roll is a new change).
var weights = []struct {
	act string
	pct int
}{
	{ActPatchSet, 20}, {ActRecheck, 11}, {ActRecheckOld, 3}, {ActComment, 9},
	{ActAbandon, 3}, {ActMerge, 3}, {ActDuplicate, 14}, {ActGarbage, 7}, {ActUnconfigured, 5},
}

// Where new changes go: configured projects and branches, a branch only the
// non-voting job covers, and (ActUnconfigured) a project no job covers.
var destinations = []struct {
	project, branch string
	pct             int
}{
	{"platform/core", "main", 65}, {"platform/core", "release/2.0", 10}, {"platform/core", "dev", 8}, {"tools/ci/deploy", "main", 17},
}

var kindsByWeight = []struct {
	kind string
	pct  int
}{
	{gerritsim.KindRework, 70}, {gerritsim.KindTrivialRebase, 10}, {gerritsim.KindTrivialRebaseWithMessage, 5},
	{gerritsim.KindNoCodeChange, 10}, {gerritsim.KindNoChange, 5},
}

var rechecks = []string{"recheck", "Recheck", "  recheck  ", "The failure looks unrelated.\nrecheck"}

var chatter = []string{"LGTM", "please recheck later", "rechecking the docs now", "I will recheck tomorrow", "Nice cleanup!"}

// maxPatchSets bounds the patch sets of one change.
const maxPatchSets = 8

// Workload plays a mix of Gerrit activity into the Gerrit simulator (whose
// Kinesis sink turns every event into a record), and puts duplicates and
// garbage straight into Kinesis, as a retrying or broken plugin would.
type Workload struct {
	g      *gerritsim.Server
	client *kinesis.Client
	stream string
	rnd    *rand.Rand
	// dupHorizon limits duplicates to the most recent events (0: any):
	// a long soak stays within the streams' duplicate window.
	dupHorizon int

	mu      sync.Mutex
	open    []*wchange
	closed  int
	mains   []Emitted // events the workload caused (duplicate candidates)
	dups    int
	garbage [][]byte
	counts  map[string]int
	steps   int
}

type wchange struct {
	number    int
	patchSets int
}

// NewWorkload returns a workload seeded with seed.
func NewWorkload(g *gerritsim.Server, client *kinesis.Client, stream string, seed int64) *Workload {
	return &Workload{
		g: g, client: client, stream: stream,
		rnd:    rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)),
		counts: map[string]int{},
	}
}

// Play runs n steps, spread evenly over d (as fast as possible if d is 0),
// until ctx ends. It returns the steps played.
func (w *Workload) Play(ctx context.Context, n int, d time.Duration) (int, error) {
	start := time.Now()
	for i := 0; i < n; i++ {
		if d > 0 {
			at := start.Add(time.Duration(int64(d) * int64(i) / int64(n)))
			select {
			case <-ctx.Done():
				return i, nil
			case <-time.After(time.Until(at)):
			}
		} else if ctx.Err() != nil {
			return i, nil
		}
		if _, err := w.Step(ctx); err != nil {
			return i, err
		}
	}
	return n, nil
}

// Step plays one action: one Kinesis record of the workload's own (a Gerrit
// event, a duplicate or a garbage record).
func (w *Workload) Step(ctx context.Context) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	act := w.pick()
	var err error
	switch act {
	case ActNewChange, ActUnconfigured:
		err = w.newChange(act == ActUnconfigured)
	case ActPatchSet:
		act, err = w.newPatchSet()
	case ActRecheck, ActRecheckOld, ActComment:
		act, err = w.comment(act)
	case ActAbandon, ActMerge:
		err = w.close(act == ActMerge)
	case ActDuplicate:
		err = w.duplicate(ctx)
	case ActGarbage:
		err = w.putGarbage(ctx)
	}
	if err != nil {
		return act, fmt.Errorf("workload step %d (%s): %w", w.steps+1, act, err)
	}
	w.counts[act]++
	w.steps++
	return act, nil
}

// pick rolls an action, falling back to a new change when the roll needs
// something that does not exist yet.
func (w *Workload) pick() string {
	roll := w.rnd.IntN(100)
	act := ActNewChange
	for _, c := range weights {
		if roll < c.pct {
			act = c.act
			break
		}
		roll -= c.pct
	}
	switch act {
	case ActPatchSet, ActRecheck, ActComment, ActAbandon, ActMerge:
		if len(w.open) == 0 {
			return ActNewChange
		}
	case ActRecheckOld:
		if len(w.open) == 0 {
			return ActNewChange
		}
		if w.withOlder() == nil {
			return ActRecheck
		}
	case ActDuplicate:
		if len(w.mains) == 0 {
			return ActNewChange
		}
	}
	return act
}

func (w *Workload) newChange(unconfigured bool) error {
	project, branch := "other/unconfigured", "main"
	if !unconfigured {
		roll := w.rnd.IntN(100)
		for _, d := range destinations {
			if roll < d.pct {
				project, branch = d.project, d.branch
				break
			}
			roll -= d.pct
		}
	}
	n, _, ev, err := w.g.Upload(gerritsim.Upload{
		Project: project, Branch: branch, Uploader: Developer,
		Subject: fmt.Sprintf("Chaos change %d", w.steps+1),
	})
	if err != nil {
		return err
	}
	w.open = append(w.open, &wchange{number: n, patchSets: 1})
	w.mains = append(w.mains, Emitted{"patchset-created", ev})
	return nil
}

// openChange picks an open change, the recent ones more often.
func (w *Workload) openChange() *wchange {
	n := len(w.open)
	if w.rnd.IntN(2) == 0 && n > 20 {
		return w.open[n-1-w.rnd.IntN(20)]
	}
	return w.open[w.rnd.IntN(n)]
}

// newPatchSet uploads a patch set, or when the change picked has
// maxPatchSets already, comments "recheck" on it instead.
func (w *Workload) newPatchSet() (string, error) {
	c := w.openChange()
	if c.patchSets >= maxPatchSets {
		return w.comment(ActRecheck)
	}
	roll, kind := w.rnd.IntN(100), gerritsim.KindRework
	for _, k := range kindsByWeight {
		if roll < k.pct {
			kind = k.kind
			break
		}
		roll -= k.pct
	}
	_, ps, ev, err := w.g.Upload(gerritsim.Upload{Change: c.number, Kind: kind, Uploader: Developer})
	if err != nil {
		return ActPatchSet, err
	}
	c.patchSets = ps
	w.mains = append(w.mains, Emitted{"patchset-created", ev})
	return ActPatchSet, nil
}

func (w *Workload) withOlder() *wchange {
	for i := 0; i < 5 && len(w.open) > 0; i++ {
		if c := w.openChange(); c.patchSets > 1 {
			return c
		}
	}
	return nil
}

// comment comments on an open change; it returns the action played (a
// recheck of an older patch set becomes a current one when there is none).
func (w *Workload) comment(act string) (string, error) {
	c, ps, text := w.openChange(), 0, ""
	var labels map[string]int
	switch act {
	case ActRecheck:
		text = rechecks[w.rnd.IntN(len(rechecks))]
	case ActRecheckOld:
		if o := w.withOlder(); o != nil {
			c = o
			ps = 1 + w.rnd.IntN(c.patchSets-1)
		} else {
			act = ActRecheck
		}
		text = "recheck"
	case ActComment:
		text = chatter[w.rnd.IntN(len(chatter))]
		if w.rnd.IntN(2) == 0 {
			labels = map[string]int{"Code-Review": 1 + w.rnd.IntN(2)}
		}
	}
	ev, err := w.g.Comment(c.number, ps, Reviewer, text, labels)
	if err != nil {
		return act, err
	}
	w.mains = append(w.mains, Emitted{"comment-added", ev})
	return act, nil
}

func (w *Workload) close(merge bool) error {
	i := w.rnd.IntN(len(w.open))
	c := w.open[i]
	var ev []byte
	var err error
	typ := "change-abandoned"
	if merge {
		typ = "change-merged"
		ev, err = w.g.Merge(c.number, Reviewer)
	} else {
		ev, err = w.g.Abandon(c.number, Developer, "not needed any more")
	}
	if err != nil {
		return err
	}
	w.open = append(w.open[:i], w.open[i+1:]...)
	w.closed++
	w.mains = append(w.mains, Emitted{typ, ev})
	return nil
}

// duplicate puts an earlier event again as another Kinesis record: the same
// bytes, or (one in five) wrapped in an events-broker envelope.
func (w *Workload) duplicate(ctx context.Context) error {
	first := 0
	if w.dupHorizon > 0 {
		first = max(0, len(w.mains)-w.dupHorizon)
	}
	e := w.mains[first+w.rnd.IntN(len(w.mains)-first)]
	data := e.Data
	if w.rnd.IntN(5) == 0 {
		data = []byte(fmt.Sprintf(`{"header":{"eventId":"dup-%d","eventType":%q,"sourceInstanceId":"gerrit-1","eventCreatedOn":1},"body":%s}`,
			w.steps, e.Type, e.Data))
	}
	if err := put(ctx, w.client, w.stream, e.Type, data); err != nil {
		return err
	}
	w.dups++
	return nil
}

func (w *Workload) putGarbage(ctx context.Context) error {
	var recent []byte
	if len(w.mains) > 0 {
		recent = w.mains[len(w.mains)-1].Data
	}
	data := Garbage(w.rnd.IntN(len(garbageKinds)), w.steps, recent)
	if err := put(ctx, w.client, w.stream, "garbage", data); err != nil {
		return err
	}
	w.garbage = append(w.garbage, data)
	return nil
}

var garbageKinds = []string{"not JSON", "binary", "truncated", "string number", "array type", "JSON array", "missing change", "negative number", "no type", "blank"}

// Garbage returns garbage record kind (an index into garbageKinds) number n;
// recent is a valid event to truncate (may be nil).
func Garbage(kind, n int, recent []byte) []byte {
	switch garbageKinds[kind%len(garbageKinds)] {
	case "not JSON":
		return fmt.Appendf(nil, "garbage record %d: this is not JSON", n)
	case "binary":
		return fmt.Appendf(nil, "\xff\xfe\x00\x01garbage %d\xc3\x28", n)
	case "truncated":
		if len(recent) > 20 {
			return recent[:len(recent)/2]
		}
		return fmt.Appendf(nil, `{"type":"patchset-created","eventCreatedOn":%d,"change":{"number":`, n)
	case "string number":
		return fmt.Appendf(nil, `{"type":"patchset-created","eventCreatedOn":%d,"change":{"number":"seven","project":"platform/core","branch":"main"},"patchSet":{"number":1,"revision":"deadbeef"}}`, n)
	case "array type":
		return fmt.Appendf(nil, `{"type":["comment-added"],"eventCreatedOn":%d}`, n)
	case "JSON array":
		return fmt.Appendf(nil, `[%d,"patchset-created"]`, n)
	case "missing change":
		return fmt.Appendf(nil, `{"type":"comment-added","eventCreatedOn":%d,"comment":"recheck"}`, n)
	case "negative number":
		return fmt.Appendf(nil, `{"type":"patchset-created","eventCreatedOn":%d,"change":{"number":-4,"project":"platform/core","branch":"main"},"patchSet":{"number":1,"revision":"deadbeef"}}`, n)
	case "no type":
		return fmt.Appendf(nil, `{"eventCreatedOn":%d,"change":{"number":4}}`, n)
	default: // blank: whitespace only (Kinesis refuses an empty record)
		return []byte("  \n ")
	}
}

// put writes one record, retrying for up to 30 seconds.
func put(ctx context.Context, client *kinesis.Client, stream, typ string, data []byte) error {
	deadline := time.Now().Add(30 * time.Second)
	wait := 50 * time.Millisecond
	for {
		_, _, err := gerritsim.PutEvent(ctx, client, stream, typ, data)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
}

// Played is what the workload did: steps by action, the duplicates and the
// garbage records it put.
func (w *Workload) Played() (steps int, counts map[string]int, duplicates int, garbage [][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	counts = make(map[string]int, len(w.counts))
	for k, v := range w.counts {
		counts[k] = v
	}
	return w.steps, counts, w.dups, append([][]byte(nil), w.garbage...)
}
