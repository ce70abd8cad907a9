package event_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/events/*.golden")

// result is what a golden file holds: the parts of a parsed event the
// pipeline relies on, or the error.
type result struct {
	Type         string `json:"type"`
	ID           string `json:"id"`
	Change       int    `json:"change"`
	PatchSet     int    `json:"patchset"`
	Project      string `json:"project"`
	Branch       string `json:"branch"`
	Revision     string `json:"revision"`
	Account      string `json:"account"` // Account().Username
	Known        bool   `json:"known"`
	Trivial      bool   `json:"trivial"`
	NoCodeChange bool   `json:"noCodeChange"`
	MetaRef      bool   `json:"metaRef"`
	InstanceID   string `json:"instanceId,omitempty"`
}

// render is a stable, indented rendering of Parse's result.
func render(t *testing.T, ev *event.Event, err error) []byte {
	t.Helper()
	var v any
	if err != nil {
		v = struct {
			Error string `json:"error"`
		}{err.Error()}
	} else {
		r := result{
			Type: ev.Type, ID: ev.ID(), Change: ev.ChangeNumber(), PatchSet: ev.PatchSetNumber(),
			Project: ev.ProjectName(), Branch: ev.Branch(), Revision: ev.Revision(),
			Known: ev.Known(), Trivial: ev.Trivial(), NoCodeChange: ev.NoCodeChange(), MetaRef: ev.IsMetaRef(),
			InstanceID: ev.InstanceID,
		}
		if a := ev.Account(); a != nil {
			r.Account = a.Username
		}
		v = r
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func eventFixtures(t testing.TB) []string {
	files, err := filepath.Glob("testdata/events/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no event fixtures: %v", err)
	}
	return files
}

func TestParseGolden(t *testing.T) {
	for _, f := range eventFixtures(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ev, perr := event.Parse(in, 0)
			got := render(t, ev, perr)
			golden := strings.TrimSuffix(f, ".json") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("Parse(%s) mismatch (-want +got):\n%s", f, diff)
			}
			// The fixtures' names say what they must do.
			if bad := strings.HasPrefix(filepath.Base(f), "bad-"); bad != (perr != nil) {
				t.Errorf("Parse(%s) error = %v; fixtures named bad-* must fail, the others parse", f, perr)
			}
		})
	}
}

// Every known type has a fixture, so the goldens cover the whole model.
func TestFixturesCoverKnownTypes(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range eventFixtures(t) {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := event.Parse(in, 0); err == nil {
			seen[ev.Type] = true
		}
	}
	for _, typ := range event.KnownTypes() {
		if !seen[typ] {
			t.Errorf("no valid fixture in testdata/events for %s", typ)
		}
	}
}
