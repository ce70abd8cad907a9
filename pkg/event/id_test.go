package event_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
)

const commentAdded = `{"author":{"name":"Ravi Kumar","email":"ravi.kumar@example.org","username":"rkumar"},` +
	`"approvals":[{"type":"Code-Review","description":"Code-Review","value":"2","oldValue":"-1"}],` +
	`"comment":"Patch Set 2: Code-Review+2\n\nrecheck",` +
	`"patchSet":{"number":2,"revision":"b91c5e0f7d3a2b4c6e8f0a1b3c5d7e9f1a2b3c4d"},` +
	`"change":{"project":"platform/core","branch":"main","number":1234},` +
	`"type":"comment-added","eventCreatedOn":1717488100}`

// The same event with keys reordered, whitespace added and a character escaped.
const commentAddedReordered = `{
  "eventCreatedOn": 1717488100,
  "type": "comment-added",
  "change": {"number": 1234, "branch": "main", "project": "platform\/core"},
  "patchSet": {"revision": "b91c5e0f7d3a2b4c6e8f0a1b3c5d7e9f1a2b3c4d", "number": 2},
  "comment": "Patch Set 2: Code-Review+2\n\nrecheck",
  "approvals": [{"oldValue": "-1", "value": "2", "description": "Code-Review", "type": "Code-Review"}],
  "author": {"username": "rkumar", "email": "ravi.kumar@example.org", "name": "Ravi Kumar"}
}`

func mustID(t *testing.T, in string) string {
	t.Helper()
	ev, err := event.Parse([]byte(in), 0)
	if err != nil {
		t.Fatalf("Parse(%s): %v", in, err)
	}
	return ev.ID()
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+\.-?[0-9]+\.-?[0-9]+\.-?[0-9]+\.[0-9a-f]{16}$`)

func TestIDFormat(t *testing.T) {
	id := mustID(t, commentAdded)
	if !strings.HasPrefix(id, "comment-added.1234.2.1717488100.") || !idPattern.MatchString(id) {
		t.Errorf("ID() = %q; want comment-added.1234.2.1717488100.<16 hex>", id)
	}
	if id != mustID(t, commentAdded) {
		t.Errorf("ID() differs between two parses of the same bytes")
	}

	// Types from the wire are made safe for a header.
	for _, typ := range []string{"weird type\r\nX-Inject: 1", "", "ünïcode", strings.Repeat("t", 300)} {
		ev := &event.Event{Type: typ}
		if id := ev.ID(); !idPattern.MatchString(id) || len(id) > 128 {
			t.Errorf("Event{Type: %q}.ID() = %q; want only [A-Za-z0-9_.-], at most 128 bytes", typ, id)
		}
	}
}

func TestIDStable(t *testing.T) {
	if a, b := mustID(t, commentAdded), mustID(t, commentAddedReordered); a != b {
		t.Errorf("reordered keys and whitespace: ID() = %s and %s; want one ID", a, b)
	}
	wrapped := `{"header":{"eventId":"e1","sourceInstanceId":"gerrit-1"},"body":` + commentAdded + `}`
	if a, b := mustID(t, commentAdded), mustID(t, wrapped); a != b {
		t.Errorf("bare and in an envelope: ID() = %s and %s; want one ID", a, b)
	}
	// An event built in code has an ID too, and a stable one.
	ev := &event.Event{Type: event.TypePatchsetCreated, Change: change("p", "main", 5), PatchSet: patchSet(1, "a", "")}
	if a, b := ev.ID(), ev.ID(); a != b || !strings.HasPrefix(a, "patchset-created.5.1.0.") {
		t.Errorf("built event: ID() = %s, then %s; want one ID starting patchset-created.5.1.0.", a, b)
	}
}

func TestIDDiffers(t *testing.T) {
	base := mustID(t, commentAdded)
	tests := []struct {
		name string
		in   string
	}{
		{"other eventCreatedOn", strings.Replace(commentAdded, "1717488100", "1717488101", 1)},
		{"other comment", strings.Replace(commentAdded, `recheck"`, `retest"`, 1)},
		{"other vote", strings.Replace(commentAdded, `"value":"2"`, `"value":"1"`, 1)},
		{"other author", strings.Replace(commentAdded, `"username":"rkumar"`, `"username":"jdev"`, 1)},
		{"other patch set", strings.Replace(commentAdded, `"number":2`, `"number":3`, 1)},
		{"other change", strings.Replace(commentAdded, `"number":1234`, `"number":1235`, 1)},
		{"extra field", strings.Replace(commentAdded, `"type":"comment-added"`, `"type":"comment-added","instanceId":"gerrit-2"`, 1)},
		{"other type", strings.Replace(commentAdded, `"type":"comment-added"`, `"type":"comment-edited"`, 1)},
	}
	seen := map[string]string{base: "base"}
	for _, tt := range tests {
		if tt.in == commentAdded {
			t.Fatalf("%s: the replacement changed nothing", tt.name)
		}
		id := mustID(t, tt.in)
		if prev, ok := seen[id]; ok {
			t.Errorf("%s: ID() = %s, the same as for %s", tt.name, id, prev)
		}
		seen[id] = tt.name
	}

	// Types that sanitize to one token still get different IDs.
	a := (&event.Event{Type: "a b"}).ID()
	b := (&event.Event{Type: "a_b"}).ID()
	if a == b {
		t.Errorf(`ID() of types "a b" and "a_b" = %s both; want different`, a)
	}
}
