package event_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/google/go-cmp/cmp"
)

// psCreated is a minimal valid patchset-created event with the change number
// and patch set number given as raw JSON.
func psCreated(change, ps string) string {
	return `{"type":"patchset-created","change":{"project":"platform/core","branch":"main","number":` + change +
		`},"patchSet":{"number":` + ps + `,"revision":"b91c5e0f7d3a2b4c6e8f0a1b3c5d7e9f1a2b3c4d"},"eventCreatedOn":1717486402}`
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"empty", "", 0, "invalid gerrit event: empty input"},
		{"blank", " \n\t", 0, "invalid gerrit event: empty input"},
		{"over the size limit", psCreated("1", "1"), 100, "invalid gerrit event: 197 bytes, over the limit of 100"},
		{"binary", "\x1f\x8b\x08\x00\x00\x00", 0, "invalid gerrit event: not UTF-8 text (binary data?) at offset 1"},
		{"not JSON", "patchset-created 1234/2", 0, "invalid gerrit event: not JSON: invalid character 'p' looking for beginning of value at offset 0"},
		{"trailing data", `{"type":"x"} {"type":"y"}`, 0, "invalid gerrit event: not JSON: invalid character '{' after top-level value at offset 13"},
		{"truncated", `{"type":"patchset-created","change":{"proj`, 0, "invalid gerrit event: truncated JSON: input ends after 42 bytes"},
		{"truncated after a value", `{"type":"x"`, 0, "invalid gerrit event: truncated JSON: input ends after 11 bytes"},
		{"array", `[{"type":"patchset-created"}]`, 0, "invalid gerrit event: want a JSON object, got array"},
		{"string", `"patchset-created"`, 0, "invalid gerrit event: want a JSON object, got string"},
		{"number", `42`, 0, "invalid gerrit event: want a JSON object, got number"},
		{"null", `null`, 0, "invalid gerrit event: want a JSON object, got null"},
		{"missing type", `{"change":{"number":1}}`, 0, "invalid gerrit event: missing type"},
		{"empty type", `{"type":""}`, 0, "invalid gerrit event: empty type"},
		{"blank type", `{"type":"  "}`, 0, "invalid gerrit event: empty type"},
		{"null type", `{"type":null}`, 0, "invalid gerrit event: empty type"},
		{"type not a string", `{"type":["patchset-created"]}`, 0, "invalid gerrit event: type: want string, got array"},
		{"change.number an object", psCreated(`{"id":1}`, "1"), 0, "invalid gerrit event: change.number: want int or string, got object"},
		{"change.number not an int", psCreated(`"12a"`, "1"), 0, `invalid gerrit event: change.number: want int or string, got string "12a" (not an int)`},
		{"patchSet.number a float", psCreated("1", "2.5"), 0, "invalid gerrit event: patchSet.number: want int or string, got number 2.5"},
		{"change a string", `{"type":"patchset-created","change":"1234"}`, 0, "invalid gerrit event: change: want object, got string"},
		{"eventCreatedOn a string", `{"type":"x","eventCreatedOn":"1717486402"}`, 0, "invalid gerrit event: eventCreatedOn: want int, got string"},
		{"wip a string", `{"type":"x","change":{"wip":"true"}}`, 0, "invalid gerrit event: change.wip: want bool, got string"},
		{"account a string", `{"type":"x","uploader":"jdev"}`, 0, "invalid gerrit event: uploader: want object, got string"},
		{"approvals an object", `{"type":"x","approvals":{"type":"Verified"}}`, 0, "invalid gerrit event: approvals: want array, got object"},
		{"second approval value bad", `{"type":"x","approvals":[{"type":"Code-Review","value":"2"},{"type":"Verified","value":"approved"}]}`, 0,
			`invalid gerrit event: approvals[1].value: want int or string, got string "approved" (not an int)`},
		{"oldValue an array", `{"type":"x","approvals":[{"type":"Verified","value":"1","oldValue":[0]}]}`, 0, "invalid gerrit event: approvals[0].oldValue: want int or string, got array"},
		{"parent not a string", `{"type":"x","patchSet":{"parents":["4f1e",5]}}`, 0, "invalid gerrit event: patchSet.parents[1]: want string, got number"},
		{"nested account field", `{"type":"x","patchSet":{"author":{"name":{"first":"Jane"}}}}`, 0, "invalid gerrit event: patchSet.author.name: want string, got object"},
		{"long bad string clipped", psCreated(`"`+strings.Repeat("9", 30)+strings.Repeat("x", 30)+`"`, "1"), 0,
			`invalid gerrit event: change.number: want int or string, got string "999999999999999999999999999999xxxxxxxxxx…" (not an int)`},
		{"int overflow", psCreated("1", "99999999999999999999"), 0, "invalid gerrit event: patchSet.number: want int or string, got number 99999999999999999999"},
		{"missing change and patchSet", `{"type":"patchset-created"}`, 0, "invalid gerrit event: patchset-created: missing change, patchSet"},
		{"missing change fields", `{"type":"comment-added","change":{"subject":"x"},"patchSet":{"number":1,"revision":"a"}}`, 0,
			"invalid gerrit event: comment-added: missing change.project, change.branch, change.number"},
		{"missing revision", `{"type":"change-merged","change":{"project":"p","branch":"main","number":"5"},"patchSet":{"number":"1"}}`, 0,
			"invalid gerrit event: change-merged: missing patchSet.revision"},
		{"zero patch set", psCreated("1", "0"), 0, "invalid gerrit event: patchset-created: missing patchSet.number"},
		{"negative change", psCreated("-1234", "1"), 0, "invalid gerrit event: patchset-created: change.number: want a positive int, got -1234"},
		{"negative patch set", psCreated("1234", `"-2"`), 0, "invalid gerrit event: patchset-created: patchSet.number: want a positive int, got -2"},
		{"change-deleted without change", `{"type":"change-deleted","deleter":{"username":"admin"}}`, 0, "invalid gerrit event: change-deleted: missing change"},
		{"ref-updated without refUpdate", `{"type":"ref-updated","submitter":{"username":"jdev"}}`, 0, "invalid gerrit event: ref-updated: missing refUpdate"},
		{"ref-updated without project", `{"type":"ref-updated","refUpdate":{"refName":"refs/heads/main"}}`, 0, "invalid gerrit event: ref-updated: missing refUpdate.project"},
		{"project-created without name", `{"type":"project-created","headName":"refs/heads/main"}`, 0, "invalid gerrit event: project-created: missing projectName"},
		{"envelope body a string", `{"header":{"eventId":"4b7c"},"body":"{\"type\":\"x\"}"}`, 0, "invalid gerrit event: envelope body: want object, got string"},
		{"envelope header field", `{"header":{"sourceInstanceId":7},"body":{"type":"x"}}`, 0, "invalid gerrit event: header.sourceInstanceId: want string, got number"},
		{"envelope body without type", `{"header":{},"body":{"change":{}}}`, 0, "invalid gerrit event: missing type"},
		{"envelope body field", `{"header":{},"body":` + psCreated("{}", "1") + `}`, 0, "invalid gerrit event: change.number: want int or string, got object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := event.Parse([]byte(tt.in), tt.max)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, nil; want error %q", tt.in, ev, tt.want)
			}
			if ev != nil {
				t.Errorf("Parse(%q) returned an event with error %v", tt.in, err)
			}
			if !errors.Is(err, event.ErrInvalid) {
				t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tt.in, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse(%q) error:\n got %s\nwant %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseVariants(t *testing.T) {
	tests := []struct {
		name             string
		in               string
		change, patchSet int
	}{
		{"int numbers", psCreated("1234", "2"), 1234, 2},
		{"string numbers", psCreated(`"1234"`, `"2"`), 1234, 2},
		{"mixed numbers", psCreated(`"1234"`, "2"), 1234, 2},
		{"unknown fields", `{"type":"patchset-created","change":{"project":"p","branch":"main","number":1234,"newField":{"a":[1]}},` +
			`"patchSet":{"number":2,"revision":"b91c","files":[{"file":"a.go"}]},"futureTopLevel":true}`, 1234, 2},
	}
	for _, tt := range tests {
		ev, err := event.Parse([]byte(tt.in), 0)
		if err != nil {
			t.Errorf("%s: Parse: %v", tt.name, err)
			continue
		}
		if ev.ChangeNumber() != tt.change || ev.PatchSetNumber() != tt.patchSet {
			t.Errorf("%s: Parse(%s) = change %d, patch set %d; want %d, %d", tt.name, tt.in, ev.ChangeNumber(), ev.PatchSetNumber(), tt.change, tt.patchSet)
		}
	}
}

func TestParseSizeLimit(t *testing.T) {
	in := []byte(psCreated("1", "1"))
	if _, err := event.Parse(in, len(in)); err != nil {
		t.Errorf("Parse at exactly the limit (%d bytes): %v", len(in), err)
	}
	if _, err := event.Parse(in, len(in)-1); err == nil {
		t.Errorf("Parse one byte over the limit (%d > %d) succeeded; want error", len(in), len(in)-1)
	}
	if _, err := event.Parse(in, -1); err != nil {
		t.Errorf("Parse with limit -1 (none): %v", err)
	}
}

// Parse fills Project and RefName for every type, keeps Raw as received and
// does not alias the caller's buffer.
func TestParseNormalizes(t *testing.T) {
	tests := []struct {
		name             string
		in               string
		project, refName string
	}{
		{"older change event without top-level fields", psCreated("1", "1"), "platform/core", "refs/heads/main"},
		{"ref-updated", `{"type":"ref-updated","refUpdate":{"refName":"refs/heads/dev","project":"tools/x"}}`, "tools/x", "refs/heads/dev"},
		{"project-created", `{"type":"project-created","projectName":"tools/new","headName":"refs/heads/main"}`, "tools/new", ""},
		{"top-level kept", `{"type":"ref-replicated","project":"tools/y","refName":"refs/heads/z"}`, "tools/y", "refs/heads/z"},
	}
	for _, tt := range tests {
		buf := []byte(tt.in)
		ev, err := event.Parse(buf, 0)
		if err != nil {
			t.Fatalf("%s: Parse: %v", tt.name, err)
		}
		if ev.Project != tt.project || ev.RefName != tt.refName {
			t.Errorf("%s: Project, RefName = %q, %q; want %q, %q", tt.name, ev.Project, ev.RefName, tt.project, tt.refName)
		}
		if string(ev.Raw) != tt.in {
			t.Errorf("%s: Raw = %s; want the input", tt.name, ev.Raw)
		}
		buf[0] = 'X'
		if ev.Raw[0] != '{' {
			t.Errorf("%s: Raw aliases the input buffer", tt.name)
		}
	}

	ev, err := event.Parse([]byte(`{"type":"project-created","projectName":"tools/new","projectHead":"refs/heads/trunk"}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.HeadName != "refs/heads/trunk" {
		t.Errorf("HeadName = %q from projectHead; want refs/heads/trunk", ev.HeadName)
	}
}

func TestParseEnvelope(t *testing.T) {
	bare := psCreated("1234", "2")
	wrapped := `{"header":{"eventId":"4b7c8a4e-5c1d-4f6e-9a1b-2c3d4e5f6a7b","sourceInstanceId":"gerrit-us-east-1","eventCreatedOn":1717486402},"body":` + bare + `}`

	want, err := event.Parse([]byte(bare), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := event.Parse([]byte(wrapped), 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Raw) != bare {
		t.Errorf("Raw = %s; want the envelope body %s", got.Raw, bare)
	}
	if got.InstanceID != "gerrit-us-east-1" {
		t.Errorf("InstanceID = %q; want the header's sourceInstanceId", got.InstanceID)
	}
	if got.ID() != want.ID() {
		t.Errorf("ID() = %s wrapped, %s bare; want one ID", got.ID(), want.ID())
	}
	got.InstanceID = ""
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse(envelope) mismatch with Parse(bare) (-want +got):\n%s", diff)
	}

	// The event's own instanceId wins over the header's.
	own := `{"header":{"sourceInstanceId":"from-header"},"body":{"type":"x","instanceId":"from-event"}}`
	ev, err := event.Parse([]byte(own), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.InstanceID != "from-event" {
		t.Errorf("InstanceID = %q; want from-event", ev.InstanceID)
	}

	// An event that has a type is never unwrapped, even with a body field.
	ev, err = event.Parse([]byte(`{"type":"plugin-event","body":{"type":"patchset-created"}}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "plugin-event" {
		t.Errorf("Type = %q; want plugin-event", ev.Type)
	}
}
