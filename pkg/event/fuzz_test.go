package event_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
)

// FuzzParse checks that Parse never panics, that its errors are one-line
// ErrInvalid errors fit for a NATS header, that the ID is deterministic and
// header-safe, and that an event re-encodes and re-parses to the same identity.
func FuzzParse(f *testing.F) {
	for _, file := range eventFixtures(f) {
		in, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(in)
	}
	// Corners the fixtures do not reach.
	for _, s := range []string{
		`{"TYPE":"patchset-created","Change":{"Project":"p","branch":"b","number":"+7"},"patchSet":{"number":"1","revision":"r"}}`,
		`{"header":{"sourceInstanceId":"h"},"body":{"type":"ref-updated","refUpdate":{"refName":"main","project":"p"}}}`,
		`{"type":"project-created","projectName":"p","projectHead":"refs/heads/trunk","project":"q"}`,
		`{"type":"x\u2028\ud800<&>","refName":"refs/heads/a","approvals":[{"value":"-2","oldValue":null}]}`,
		`{"type":"vote-deleted","change":{"project":"p","branch":"b","number":1},"patchSet":{"number":1,"revision":"r"},"approvals":[{"value":"0","oldValue":"-1"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ev, err := event.Parse(in, 0)
		if err != nil {
			if ev != nil {
				t.Errorf("Parse returned an event with error %v", err)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Errorf("Parse error %v does not wrap ErrInvalid", err)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00") {
				t.Errorf("Parse error %q has a line break or NUL: unfit for a header", msg)
			}
			return
		}
		id := ev.ID()
		if !idPattern.MatchString(id) {
			t.Errorf("ID() = %q; want only [A-Za-z0-9_.-] in the documented form", id)
		}
		again, err := event.Parse(in, 0)
		if err != nil {
			t.Fatalf("second Parse of the same input failed: %v", err)
		}
		if again.ID() != id {
			t.Errorf("ID() = %s, then %s for the same input", id, again.ID())
		}

		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", ev, err)
		}
		re, err := event.Parse(out, 0)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(%q))) = %v\nencoded: %s", in, err, out)
		}
		type identity struct {
			Type                                string
			Change, PatchSet                    int
			Project, Branch, Revision, Instance string
			Known, Trivial, NoCodeChange, Meta  bool
		}
		of := func(e *event.Event) identity {
			return identity{e.Type, e.ChangeNumber(), e.PatchSetNumber(), e.ProjectName(), e.Branch(), e.Revision(),
				e.InstanceID, e.Known(), e.Trivial(), e.NoCodeChange(), e.IsMetaRef()}
		}
		if a, b := of(ev), of(re); a != b {
			t.Errorf("re-parsed identity = %+v; want %+v\ninput:   %q\nencoded: %s", b, a, in, out)
		}
	})
}
