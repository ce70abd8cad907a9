package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// storedEvent is a patchset-created event as the parser stored it.
type storedEvent struct {
	seq uint64
	ev  *event.Event
}

// parsed publishes a Gerrit event as the parser does: the event's JSON, its
// identity as Msg-Id, the Gerrit-* headers; with replay, as a replayed copy.
func (h *harness) parsed(raw []byte, replay string) storedEvent {
	h.t.Helper()
	ev, err := event.Parse(raw, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	hdr := nats.Header{}
	bus.SetChange(hdr, ev.ProjectName(), ev.ChangeNumber(), ev.PatchSetNumber())
	hdr.Set(bus.GerritEventType, ev.Type)
	id := ev.ID()
	if replay != "" {
		hdr.Set(bus.Replay, replay)
		hdr.Set(bus.ReplayOf, "1")
		id += ".replay." + replay
	}
	seq, _ := h.publish(subject.Event(ev.Type), ev.Raw, hdr, id)
	return storedEvent{seq: seq, ev: ev}
}

func TestTriggerReplaysThePatchsetCreatedEvent(t *testing.T) {
	h := newHarness(t)
	g := gerritsim.Start(t)
	upload := func(change int) []byte {
		t.Helper()
		_, _, raw, err := g.Upload(gerritsim.Upload{Project: project, Change: change})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	ps1 := h.parsed(upload(0), "")
	n := ps1.ev.ChangeNumber()
	other := h.parsed(upload(0), "")
	ps2raw := upload(n)
	ps2 := h.parsed(ps2raw, "")
	h.parsed(ps2raw, "r-old") // an earlier replay's copy of patch set 2
	if other.ev.ChangeNumber() == n || ps2.ev.PatchSetNumber() != 2 {
		t.Fatalf("simulator: changes %d and %d, patch set %d", n, other.ev.ChangeNumber(), ps2.ev.PatchSetNumber())
	}
	before := len(h.messages(subject.EventsAll))

	// Latest patch set, Gerrit's own event (not the earlier replay's copy).
	var res triggerResult
	h.runJSON(&res, "trigger", strconv.Itoa(n), "--id", "t1")
	want := build.SetID(n, 2, ps2.ev.ID(), "t1")
	if res.ReplayID != "t1" || res.BuildSet != want || res.PatchSet != 2 || res.EventSeq != ps2.seq || res.Project != project || res.EventID != ps2.ev.ID() {
		t.Errorf("trigger %d = %+v; want replay t1 of seq %d, build set %s", n, res, ps2.seq, want)
	}
	got := h.messages(subject.EventsAll)
	if len(got) != before+1 {
		t.Fatalf("gerrit.events.> holds %d messages; want %d + the replayed event", len(got), before)
	}
	m := got[len(got)-1]
	if m.Subject != subject.Event(event.TypePatchsetCreated) || m.Header.Get(bus.MsgID) != ps2.ev.ID()+".replay.t1" ||
		m.Header.Get(bus.Replay) != "t1" || m.Header.Get(bus.ReplayOf) != strconv.FormatUint(ps2.seq, 10) || string(m.Data) != string(ps2.ev.Raw) {
		t.Errorf("replayed event = %s %v; want the patch set 2 event with Msg-Id %s.replay.t1 and the replay headers", m.Subject, m.Header, ps2.ev.ID())
	}

	// A given patch set, without publishing; the change record says it is outdated.
	h.put(streams.BucketChanges, subject.ChangeKey(project, n), build.Change{Project: project, Number: n, Latest: 2, Status: build.ChangeNew})
	out, errOut, err := h.run("trigger", strconv.Itoa(n), "1", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "would replay (dry run)") ||
		!regexp.MustCompile(`(?m)^r-\d{8}T\d{6}Z-[0-9a-f]{6}\s+`+strconv.Itoa(n)+`-1-[0-9a-f]{16}\s+`+strconv.Itoa(n)+`\s+1\s+platform/core\s+`+strconv.FormatUint(ps1.seq, 10)+`$`).MatchString(out) {
		t.Errorf("trigger %d 1 --dry-run printed:\n%s", n, out)
	}
	if !strings.Contains(errOut, "patch set 1 is outdated (latest 2)") {
		t.Errorf("trigger of an outdated patch set warned %q; want the reason the trigger will skip it", errOut)
	}
	if after := len(h.messages(subject.EventsAll)); after != before+1 {
		t.Errorf("trigger --dry-run published: %d messages; want %d", after, before+1)
	}

	if _, _, err := h.run("trigger", strconv.Itoa(n), "7"); err == nil || !strings.Contains(err.Error(), "no patchset-created event") {
		t.Errorf("trigger of an unknown patch set = %v; want no event found", err)
	}
	if _, _, err := h.run("trigger", "99999"); err == nil || !strings.Contains(err.Error(), "change 99999") {
		t.Errorf("trigger of an unknown change = %v; want no event found", err)
	}
}
