package gerritsim_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	gerrit "github.com/andygrunwald/go-gerrit"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

var sha = regexp.MustCompile(`^[0-9a-f]{40}$`)

// decode turns event JSON into a map, as a consumer that knows nothing of
// the simulator would see it.
func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("event is not JSON: %v\n%s", err, data)
	}
	return m
}

// get walks a dotted path ("patchSet.revision") through a decoded event.
func get(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[k]
	}
	return v
}

// recorder collects what OnEvent receives.
type recorder struct {
	mu     sync.Mutex
	events []recorded
}

type recorded struct {
	typ  string
	data []byte
}

func record(g *gerritsim.Server) *recorder {
	r := &recorder{}
	g.OnEvent(func(typ string, data []byte) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.events = append(r.events, recorded{typ, data})
	})
	return r
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.events...)
}

func (r *recorder) types() []string {
	var out []string
	for _, e := range r.all() {
		out = append(out, e.typ)
	}
	return out
}

func TestPatchsetCreatedEvent(t *testing.T) {
	g := gerritsim.Start(t, gerritsim.Options{FirstChange: 1234, URL: "https://review.example.com"})
	rec := record(g)
	dev := gerritsim.Account{Name: "Dev One", Email: "dev1@example.com", Username: "dev1"}
	n, ps, ev1, err := g.Upload(gerritsim.Upload{Project: project, Branch: "main", Subject: "Add frob", Topic: "frob", Uploader: dev})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1234 || ps != 1 {
		t.Fatalf("Upload = change %d patch set %d; want 1234 1", n, ps)
	}
	_, ps, ev2, err := g.Upload(gerritsim.Upload{Change: n, Kind: gerritsim.KindTrivialRebase, WIP: true})
	if err != nil {
		t.Fatal(err)
	}
	if ps != 2 {
		t.Fatalf("second Upload = patch set %d; want 2", ps)
	}

	e1, e2 := decode(t, ev1), decode(t, ev2)
	want := map[string]any{
		"type":                    "patchset-created",
		"project":                 project,
		"refName":                 "refs/heads/main",
		"change.project":          project,
		"change.branch":           "main",
		"change.number":           1234.0,
		"change.subject":          "Add frob",
		"change.topic":            "frob",
		"change.status":           "NEW",
		"change.wip":              true,
		"change.owner.username":   "dev1",
		"change.owner.email":      "dev1@example.com",
		"change.url":              "https://review.example.com/c/platform/core/+/1234",
		"patchSet.number":         2.0,
		"patchSet.ref":            "refs/changes/34/1234/2",
		"patchSet.kind":           "TRIVIAL_REBASE",
		"patchSet.uploader.name":  "Dev One",
		"patchSet.author.name":    "Dev One",
		"patchSet.sizeInsertions": 10.0,
		"patchSet.sizeDeletions":  -2.0,
		"uploader.username":       "dev1",
	}
	for path, w := range want {
		if got := get(e2, path); got != w {
			t.Errorf("patchset-created %s = %#v; want %#v", path, got, w)
		}
	}
	if get(e1, "change.wip") != nil || get(e1, "patchSet.kind") != "REWORK" || get(e1, "patchSet.ref") != "refs/changes/34/1234/1" {
		t.Errorf("first patchset-created: wip %v kind %v ref %v; want absent, REWORK, refs/changes/34/1234/1",
			get(e1, "change.wip"), get(e1, "patchSet.kind"), get(e1, "patchSet.ref"))
	}
	rev1, rev2 := get(e1, "patchSet.revision").(string), get(e2, "patchSet.revision").(string)
	if !sha.MatchString(rev1) || !sha.MatchString(rev2) || rev1 == rev2 {
		t.Errorf("revisions %q, %q; want two different 40-hex shas", rev1, rev2)
	}
	id, _ := get(e1, "change.id").(string)
	if !regexp.MustCompile(`^I[0-9a-f]{40}$`).MatchString(id) || get(e1, "changeKey.id") != id || get(e2, "change.id") != id {
		t.Errorf("change.id %q changeKey.id %v; want I+40 hex, the same in both events", id, get(e1, "changeKey.id"))
	}
	if msg, _ := get(e1, "change.commitMessage").(string); !strings.HasPrefix(msg, "Add frob\n\n") || !strings.HasSuffix(msg, "Change-Id: "+id+"\n") {
		t.Errorf("commitMessage = %q; want subject and Change-Id footer", msg)
	}
	if p1, p2 := get(e1, "patchSet.parents"), get(e2, "patchSet.parents"); fmt.Sprint(p1) == fmt.Sprint(p2) {
		t.Errorf("parents %v, %v; want a trivial rebase to move the parent", p1, p2)
	}
	for _, e := range []map[string]any{e1, e2} {
		created, ok1 := get(e, "patchSet.createdOn").(float64)
		at, ok2 := get(e, "eventCreatedOn").(float64)
		if !ok1 || !ok2 || created > at || at < 1.7e9 {
			t.Errorf("patchSet.createdOn %v eventCreatedOn %v; want unix seconds, createdOn <= eventCreatedOn", created, at)
		}
	}

	// Every upload also emits ref-updated for the meta ref, through OnEvent only.
	if got, want := strings.Join(rec.types(), ","), "ref-updated,patchset-created,ref-updated,patchset-created"; got != want {
		t.Fatalf("OnEvent got %s; want %s", got, want)
	}
	all := rec.all()
	if string(all[1].data) != string(ev1) || string(all[3].data) != string(ev2) {
		t.Errorf("OnEvent data differs from what Upload returned")
	}
	meta := decode(t, all[0].data)
	if get(meta, "refUpdate.refName") != "refs/changes/34/1234/meta" || get(meta, "refUpdate.project") != project ||
		get(meta, "refUpdate.oldRev") != strings.Repeat("0", 40) || get(meta, "submitter.username") != "dev1" {
		t.Errorf("ref-updated = %s; want the meta ref of change 1234 created by dev1", all[0].data)
	}
	if get(decode(t, all[2].data), "refUpdate.oldRev") != get(meta, "refUpdate.newRev") {
		t.Errorf("second meta ref-updated does not continue from the first")
	}
}

func TestRefPadding(t *testing.T) {
	g := gerritsim.Start(t, gerritsim.Options{FirstChange: 5})
	_, _, ev, err := g.Upload(gerritsim.Upload{Project: "p", Private: true})
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, ev)
	if get(e, "patchSet.ref") != "refs/changes/05/5/1" || get(e, "change.private") != true {
		t.Errorf("ref %v private %v; want refs/changes/05/5/1 and true", get(e, "patchSet.ref"), get(e, "change.private"))
	}
	if u, _ := get(e, "change.url").(string); u != g.URL()+"/c/p/+/5" {
		t.Errorf("change.url = %q; want the server URL by default", u)
	}
}

func TestCommentAddedEvent(t *testing.T) {
	g := gerritsim.Start(t)
	dev := gerritsim.Account{Name: "Dev One", Email: "dev1@example.com", Username: "dev1"}
	n, _ := upload(t, g, gerritsim.Upload{Project: project, Uploader: dev})

	ev, err := g.Comment(n, 1, dev, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, ev)
	if get(e, "type") != "comment-added" || get(e, "comment") != "Patch Set 1:\n\nrecheck" || get(e, "author.username") != "dev1" ||
		get(e, "patchSet.number") != 1.0 || get(e, "change.number") != float64(n) || get(e, "approvals") != nil {
		t.Errorf("comment-added = %s; want a recheck by dev1 on patch set 1 without approvals", ev)
	}

	reviewer := gerritsim.Account{Name: "Rev", Username: "rev"}
	ev, err = g.Comment(n, 0, reviewer, "LGTM", map[string]int{"Code-Review": 2})
	if err != nil {
		t.Fatal(err)
	}
	e = decode(t, ev)
	if got := get(e, "comment"); got != "Patch Set 1: Code-Review+2\n\nLGTM" {
		t.Errorf("comment = %q; want the vote prefix", got)
	}
	approvals, _ := get(e, "approvals").([]any)
	if len(approvals) != 1 {
		t.Fatalf("approvals = %v; want one", get(e, "approvals"))
	}
	a := approvals[0].(map[string]any)
	if a["type"] != "Code-Review" || a["value"] != "2" || a["oldValue"] != "0" {
		t.Errorf("approval = %v; want Code-Review value \"2\" oldValue \"0\"", a)
	}

	ev, _ = g.Comment(n, 1, reviewer, "", map[string]int{"Code-Review": -1})
	e = decode(t, ev)
	a = get(e, "approvals").([]any)[0].(map[string]any)
	if get(e, "comment") != "Patch Set 1: Code-Review-1" || a["value"] != "-1" || a["oldValue"] != "2" {
		t.Errorf("comment-added = %s; want a change from +2 to -1 without a message", ev)
	}

	if _, err := g.Comment(n, 3, reviewer, "x", nil); !errors.Is(err, gerritsim.ErrNotFound) {
		t.Errorf("Comment(patch set 3) = %v; want ErrNotFound", err)
	}
	if _, err := g.Comment(n, 1, reviewer, "x", map[string]int{"Nope": 1}); !errors.Is(err, gerritsim.ErrInvalid) {
		t.Errorf("Comment(unknown label) = %v; want ErrInvalid", err)
	}
}

func TestChangeLifecycleEvents(t *testing.T) {
	g := gerritsim.Start(t)
	rec := record(g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	admin := gerritsim.Account{Name: "Admin", Username: "admin"}

	ev, err := g.Abandon(n, admin, "superseded")
	if err != nil {
		t.Fatal(err)
	}
	e := decode(t, ev)
	if get(e, "type") != "change-abandoned" || get(e, "change.status") != "ABANDONED" || get(e, "abandoner.username") != "admin" || get(e, "reason") != "superseded" {
		t.Errorf("change-abandoned = %s", ev)
	}
	if _, err := g.Abandon(n, admin, ""); !errors.Is(err, gerritsim.ErrConflict) {
		t.Errorf("Abandon(abandoned) = %v; want ErrConflict", err)
	}
	if _, err := g.Merge(n, admin); !errors.Is(err, gerritsim.ErrConflict) {
		t.Errorf("Merge(abandoned) = %v; want ErrConflict", err)
	}
	if _, _, _, err := g.Upload(gerritsim.Upload{Change: n}); !errors.Is(err, gerritsim.ErrConflict) {
		t.Errorf("Upload(patch set of abandoned change) = %v; want ErrConflict", err)
	}
	if _, err := g.Comment(n, 0, admin, "", map[string]int{"Code-Review": 1}); !errors.Is(err, gerritsim.ErrConflict) {
		t.Errorf("Comment(vote on abandoned change) = %v; want ErrConflict", err)
	}

	ev, err = g.Restore(n, admin, "needed after all")
	if err != nil {
		t.Fatal(err)
	}
	if e := decode(t, ev); get(e, "type") != "change-restored" || get(e, "change.status") != "NEW" || get(e, "restorer.username") != "admin" {
		t.Errorf("change-restored = %s", ev)
	}

	_, _, created, _ := g.Upload(gerritsim.Upload{Change: n})
	ev, err = g.Merge(n, admin)
	if err != nil {
		t.Fatal(err)
	}
	e = decode(t, ev)
	if get(e, "type") != "change-merged" || get(e, "change.status") != "MERGED" || get(e, "submitter.username") != "admin" ||
		get(e, "newRev") != get(decode(t, created), "patchSet.revision") || get(e, "patchSet.number") != 2.0 {
		t.Errorf("change-merged = %s; want newRev = patch set 2's revision", ev)
	}

	c := ciClient(t, g)
	info, _, err := c.Changes.GetChange(t.Context(), changeID(n), nil)
	if err != nil || info.Status != "MERGED" || info.Submitted == nil {
		t.Errorf("GetChange after Merge = %+v, %v; want MERGED and submitted", info, err)
	}

	want := "ref-updated,patchset-created,ref-updated,change-abandoned,ref-updated,change-restored," +
		"ref-updated,patchset-created,ref-updated,ref-updated,change-merged"
	if got := strings.Join(rec.types(), ","); got != want {
		t.Errorf("events = %s; want %s", got, want)
	}
	all := rec.all()
	if branch := decode(t, all[9].data); get(branch, "refUpdate.refName") != "refs/heads/main" ||
		get(branch, "refUpdate.newRev") != get(e, "newRev") {
		t.Errorf("merge ref-updated = %s; want refs/heads/main moved to newRev", all[9].data)
	}
}

// eventCreatedOn grows strictly across every event of a server, even when
// many are made within one second by several goroutines.
func TestEventCreatedOnIncreases(t *testing.T) {
	g := gerritsim.Start(t)
	rec := record(g)
	c := ciClient(t, g)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			n, _, _, err := g.Upload(gerritsim.Upload{Project: fmt.Sprintf("p%d", i)})
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := g.Comment(n, 1, gerritsim.DefaultUploader, "recheck", nil); err != nil {
				t.Error(err)
			}
			if _, _, err := c.Changes.SetReview(t.Context(), strconv.Itoa(n), "current", &gerrit.ReviewInput{Labels: map[string]int{"Verified": 1}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	all := rec.all()
	if len(all) != 8*6 {
		t.Fatalf("got %d events; want %d", len(all), 8*6)
	}
	last := 0.0
	for i, ev := range all {
		at := get(decode(t, ev.data), "eventCreatedOn").(float64)
		if at <= last {
			t.Fatalf("event %d (%s) eventCreatedOn %v; want > %v", i, ev.typ, at, last)
		}
		last = at
	}
	if got := len(g.Reviews()); got != 8 {
		t.Errorf("Reviews() = %d; want 8", got)
	}
}

func TestUploadValidation(t *testing.T) {
	g := gerritsim.Start(t)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	for _, u := range []gerritsim.Upload{
		{},                               // no project
		{Project: project, Kind: "NOPE"}, // unknown kind
		{Project: project, Kind: gerritsim.KindTrivialRebase}, // patch set 1 is REWORK
		{Change: n, Project: "other"},
		{Change: n, Branch: "other"},
	} {
		if _, _, _, err := g.Upload(u); !errors.Is(err, gerritsim.ErrInvalid) {
			t.Errorf("Upload(%+v) = %v; want ErrInvalid", u, err)
		}
	}
	if _, _, _, err := g.Upload(gerritsim.Upload{Change: 999}); !errors.Is(err, gerritsim.ErrNotFound) {
		t.Errorf("Upload(change 999) = %v; want ErrNotFound", err)
	}
}
