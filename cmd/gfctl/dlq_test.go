package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

const originTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// deadLetter stores a message in the DLQ as the stage loop does: the original
// headers (no Msg-Id) plus the reason and the origin.
func (h *harness) deadLetter(service, origin string, originSeq int, body, reason string) uint64 {
	h.t.Helper()
	hdr := nats.Header{}
	hdr.Set(bus.GerritChange, "1234")
	hdr.Set(bus.GerritProject, project)
	hdr.Set(bus.Traceparent, originTrace)
	hdr.Set(bus.Error, reason)
	hdr.Set(bus.Stage, service)
	hdr.Set(bus.OriginSubject, origin)
	hdr.Set(bus.OriginSequence, strconv.Itoa(originSeq))
	hdr.Set(bus.OriginDelivered, "8")
	seq, _ := h.publish(subject.DLQ(service), []byte(body), hdr, "dlq."+service+"."+strconv.Itoa(originSeq))
	return seq
}

func seedDLQ(h *harness) (raw1, raw2, vote uint64) {
	raw1 = h.deadLetter("parser", subject.Raw, 17, `{"type":"patchset-created","change":`, "parse record: invalid event: truncated JSON")
	raw2 = h.deadLetter("parser", subject.Raw, 18, "\xff\xfe", "parse record: invalid event: not UTF-8 text")
	vote = h.deadLetter("voter", subject.BuildsCompleted, 40, `{"buildset":"1234-1-abc","job":"unit"}`, "read buildset 1234-1-abc: not found yet")
	return raw1, raw2, vote
}

func TestDLQList(t *testing.T) {
	h := newHarness(t)
	if out, _, err := h.run("dlq", "list"); err != nil || out != "the DLQ is empty\n" {
		t.Errorf("dlq list on an empty DLQ = %q, %v", out, err)
	}
	raw1, raw2, vote := seedDLQ(h)

	var rows []dlqRow
	h.runJSON(&rows, "dlq", "list")
	if len(rows) != 3 || rows[0].Seq != raw1 || rows[1].Seq != raw2 || rows[2].Seq != vote {
		t.Fatalf("dlq list = %+v; want seqs %d, %d, %d", rows, raw1, raw2, vote)
	}
	r := rows[2]
	if r.Stage != "voter" || r.OriginSubject != subject.BuildsCompleted || r.OriginSeq != "40" || r.Delivered != "8" ||
		r.Change != "1234" || r.Error != "read buildset 1234-1-abc: not found yet" || r.Time.IsZero() {
		t.Errorf("dlq list row = %+v; want the voter's message with its origin and error", r)
	}
	h.runJSON(&rows, "dlq", "list", "--service", "parser")
	if len(rows) != 2 || rows[0].Stage != "parser" || rows[1].Stage != "parser" {
		t.Errorf("dlq list --service parser = %+v; want the 2 of the parser", rows)
	}
	out, _, err := h.run("dlq", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^SEQ\s+TIME\s+STAGE\s+ORIGIN\s+CHANGE\s+ERROR$`,
		`(?m)^` + strconv.FormatUint(raw1, 10) + `\s+\d{4}-\d\d-\d\dT\S+Z\s+parser\s+gerrit\.raw#17\s+1234\s+parse record: invalid event: truncated JSON$`,
		`(?m)^` + strconv.FormatUint(vote, 10) + `\s+\S+\s+voter\s+ci\.builds\.completed#40\s+1234\s+read buildset`,
		`(?m)^3 messages;`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("dlq list output does not match %s:\n%s", re, out)
		}
	}
}

func TestDLQShow(t *testing.T) {
	h := newHarness(t)
	raw1, raw2, _ := seedDLQ(h)
	out, _, err := h.run("dlq", "show", strconv.FormatUint(raw1, 10))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gerritflow.dlq.parser", "Gerritflow-Error", "truncated JSON", "Gerritflow-Origin-Subject    gerrit.raw",
		"traceparent", originTrace, "body (36 bytes):\n" + `{"type":"patchset-created","change":`} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq show output lacks %q:\n%s", want, out)
		}
	}
	var m dlqMsg
	h.runJSON(&m, "dlq", "show", strconv.FormatUint(raw2, 10))
	if m.Seq != raw2 || m.Body != nil || string(m.BodyBase64) != "\xff\xfe" || m.Headers[bus.Stage][0] != "parser" {
		t.Errorf("dlq show --json = %+v; want the binary body as base64 and the headers", m)
	}
	if _, _, err := h.run("dlq", "show", "999"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("dlq show 999 = %v; want not found", err)
	}
}

func TestDLQRedrive(t *testing.T) {
	h := newHarness(t)
	raw1, raw2, vote := seedDLQ(h)

	// A dry run changes nothing.
	out, _, err := h.run("dlq", "redrive", strconv.FormatUint(raw1, 10), "--dry-run")
	if err != nil || !strings.Contains(out, "would-redrive") || !strings.Contains(out, "nothing changed") {
		t.Errorf("dlq redrive --dry-run = %q, %v", out, err)
	}
	if !h.exists(streams.DLQ, raw1) || len(h.messages(subject.Raw)) != 0 {
		t.Fatal("dlq redrive --dry-run changed the DLQ or published")
	}

	// One message: to its origin subject, with a new Msg-Id, then gone from the DLQ.
	var res struct {
		Messages []redriveRow `json:"messages"`
	}
	h.runJSON(&res, "dlq", "redrive", strconv.FormatUint(raw1, 10))
	if len(res.Messages) != 1 || res.Messages[0].Outcome != "redriven" || res.Messages[0].Subject != subject.Raw {
		t.Fatalf("dlq redrive = %+v; want one redriven to gerrit.raw", res.Messages)
	}
	got := h.messages(subject.Raw)
	if len(got) != 1 {
		t.Fatalf("gerrit.raw holds %d messages; want the redriven one", len(got))
	}
	m := got[0]
	if string(m.Data) != `{"type":"patchset-created","change":` || m.Header.Get(bus.MsgID) != "redrive."+strconv.FormatUint(raw1, 10) ||
		m.Header.Get(bus.GerritChange) != "1234" || m.Header.Get(bus.GerritProject) != project {
		t.Errorf("redriven message = %q %v; want the body, Msg-Id redrive.%d and the Gerrit headers", m.Data, m.Header, raw1)
	}
	for _, k := range dlqHeaders {
		if m.Header.Get(k) != "" {
			t.Errorf("redriven message keeps the DLQ header %s", k)
		}
	}
	if tp := m.Header.Get(bus.Traceparent); !strings.HasPrefix(tp, "00-0af7651916cd43dd8448eb211c80319c-") || tp == originTrace {
		t.Errorf("redriven traceparent = %q; want a new span in the message's trace", tp)
	}
	if h.exists(streams.DLQ, raw1) {
		t.Error("the redriven message is still in the DLQ")
	}

	// --all of one service: only the voter's message goes, to ci.builds.completed.
	out, _, err = h.run("dlq", "redrive", "--all", "--service", "voter")
	if err != nil || !regexp.MustCompile(`(?m)^1 redriven \(0 already were\), 0 skipped, 0 errors$`).MatchString(out) {
		t.Errorf("dlq redrive --all --service voter = %q, %v", out, err)
	}
	if got := h.messages(subject.BuildsCompleted); len(got) != 1 || got[0].Header.Get(bus.MsgID) != "redrive."+strconv.FormatUint(vote, 10) {
		t.Errorf("ci.builds.completed = %v; want the voter's message redriven", got)
	}
	if h.exists(streams.DLQ, vote) || !h.exists(streams.DLQ, raw2) {
		t.Error("dlq redrive --all --service voter: want the voter's message gone and the parser's kept")
	}

	// Unknown sequences are errors; a service filter skips the others.
	out, _, err = h.run("dlq", "redrive", strconv.FormatUint(raw1, 10), strconv.FormatUint(raw2, 10), "--service", "voter")
	if err == nil || !strings.Contains(out, "not found") || !strings.Contains(out, "skipped") {
		t.Errorf("dlq redrive of a gone and a parser message with --service voter = %q, %v; want one error, one skipped", out, err)
	}
	if _, _, err := h.run("dlq", "redrive"); err == nil {
		t.Error("dlq redrive without sequences or --all = nil; want a usage error")
	}
}

func TestDLQRedriveJSONIsAList(t *testing.T) {
	h := newHarness(t)
	out, _, err := h.run("dlq", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []dlqRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || rows == nil || len(rows) != 0 {
		t.Errorf("dlq list --json on an empty DLQ = %q; want []", out)
	}
}
