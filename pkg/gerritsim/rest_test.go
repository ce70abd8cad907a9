package gerritsim_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	gerrit "github.com/andygrunwald/go-gerrit"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

const project = "platform/core"

// client is the real go-gerrit v1.2.0 client, authenticated as the CI account.
func client(t *testing.T, g *gerritsim.Server, user, password string) *gerrit.Client {
	t.Helper()
	c, err := gerrit.NewClient(t.Context(), g.URL(), nil)
	if err != nil {
		t.Fatalf("gerrit.NewClient(%s): %v", g.URL(), err)
	}
	c.Authentication.SetBasicAuth(user, password)
	return c
}

func ciClient(t *testing.T, g *gerritsim.Server) *gerrit.Client {
	return client(t, g, gerritsim.DefaultUser, gerritsim.DefaultPassword)
}

func upload(t *testing.T, g *gerritsim.Server, u gerritsim.Upload) (change, patchset int) {
	t.Helper()
	n, ps, _, err := g.Upload(u)
	if err != nil {
		t.Fatalf("Upload(%+v): %v", u, err)
	}
	return n, ps
}

// changeID is the id gerritflow uses: <project>~<number>, project escaped.
func changeID(n int) string { return url.PathEscape(project) + "~" + strconv.Itoa(n) }

func status(resp *gerrit.Response) int {
	if resp == nil || resp.Response == nil {
		return 0
	}
	return resp.StatusCode
}

func TestGetChange(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project, Branch: "release/1.0", Subject: "Fix the frobnicator", Topic: "frob"})
	upload(t, g, gerritsim.Upload{Change: n})

	byNumber, _, err := c.Changes.GetChange(t.Context(), strconv.Itoa(n), nil)
	if err != nil {
		t.Fatalf("GetChange(%d): %v", n, err)
	}
	for _, id := range []string{changeID(n), byNumber.ChangeID, url.PathEscape(project) + "~release%2F1.0~" + byNumber.ChangeID} {
		got, _, err := c.Changes.GetChange(t.Context(), id, nil)
		if err != nil {
			t.Fatalf("GetChange(%q): %v", id, err)
		}
		if got.Number != n || got.ChangeID != byNumber.ChangeID {
			t.Errorf("GetChange(%q) = change %d %s; want %d %s", id, got.Number, got.ChangeID, n, byNumber.ChangeID)
		}
	}
	want := map[string]any{
		"ID": changeID(n), "Project": project, "Branch": "release/1.0", "Subject": "Fix the frobnicator",
		"Topic": "frob", "Status": "NEW", "Owner": gerritsim.DefaultUploader.Username,
	}
	got := map[string]any{
		"ID": byNumber.ID, "Project": byNumber.Project, "Branch": byNumber.Branch, "Subject": byNumber.Subject,
		"Topic": byNumber.Topic, "Status": byNumber.Status, "Owner": byNumber.Owner.Username,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("ChangeInfo.%s = %v; want %v", k, got[k], w)
		}
	}
	if len(byNumber.CurrentRevision) != 40 || byNumber.Created.IsZero() {
		t.Errorf("ChangeInfo current_revision %q, created %v; want a sha and a time", byNumber.CurrentRevision, byNumber.Created)
	}

	detail, _, err := c.Changes.GetChangeDetail(t.Context(), changeID(n), &gerrit.ChangeOptions{AdditionalFields: []string{"ALL_REVISIONS"}})
	if err != nil {
		t.Fatalf("GetChangeDetail(%s): %v", changeID(n), err)
	}
	if len(detail.Revisions) != 2 || detail.Revisions[detail.CurrentRevision].Number != 2 {
		t.Errorf("GetChangeDetail revisions = %+v; want 2 with the current one at patch set 2", detail.Revisions)
	}

	// A project with '/' that is not escaped is another path: Gerrit says 404.
	if _, resp, err := c.Changes.GetChange(t.Context(), project+"~"+strconv.Itoa(n), nil); status(resp) != http.StatusNotFound {
		t.Errorf("GetChange(unescaped project) = %d, %v; want 404", status(resp), err)
	}
}

func TestUnknownChangeIsNotFound(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	for _, id := range []string{"999", url.PathEscape("other/project") + "~" + strconv.Itoa(n), "I0123456789012345678901234567890123456789"} {
		if _, resp, err := c.Changes.GetChange(t.Context(), id, nil); status(resp) != http.StatusNotFound || err == nil {
			t.Errorf("GetChange(%q) = %d, %v; want 404 and an error", id, status(resp), err)
		}
	}
	in := &gerrit.ReviewInput{Labels: map[string]int{"Verified": 1}}
	if _, resp, err := c.Changes.SetReview(t.Context(), changeID(999), "current", in); status(resp) != http.StatusNotFound || err == nil {
		t.Errorf("SetReview(unknown change) = %d, %v; want 404", status(resp), err)
	}
	if _, resp, err := c.Changes.SetReview(t.Context(), changeID(n), strings.Repeat("ab", 20), in); status(resp) != http.StatusNotFound || err == nil {
		t.Errorf("SetReview(unknown revision) = %d, %v; want 404", status(resp), err)
	}
	if _, resp, err := c.Changes.SetReview(t.Context(), changeID(n), "7", in); status(resp) != http.StatusNotFound || err == nil {
		t.Errorf("SetReview(patch set 7 of 1) = %d, %v; want 404", status(resp), err)
	}
	if got := g.Reviews(); len(got) != 0 {
		t.Errorf("Reviews() = %+v; want none", got)
	}
}

func TestSetReviewOnCurrentRevision(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	var events []string
	g.OnEvent(func(typ string, data []byte) { events = append(events, typ+" "+string(data)) })
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	info, _, err := c.Changes.GetChange(t.Context(), changeID(n), nil)
	if err != nil {
		t.Fatal(err)
	}

	in := &gerrit.ReviewInput{
		Message: "Build succeeded\n\n- unit: SUCCESS", Labels: map[string]int{"Verified": 1},
		Tag: "autogenerated:gerritflow", Notify: "OWNER",
	}
	before := time.Now()
	res, _, err := c.Changes.SetReview(t.Context(), changeID(n), info.CurrentRevision, in)
	if err != nil {
		t.Fatalf("SetReview: %v", err)
	}
	if res.Labels["Verified"] != 1 {
		t.Errorf("ReviewResult.Labels = %v; want Verified: 1", res.Labels)
	}
	got := g.ReviewsFor(n)
	if len(got) != 1 {
		t.Fatalf("ReviewsFor(%d) = %+v; want 1 review", n, got)
	}
	r := got[0]
	if r.Project != project || r.Change != n || r.PatchSet != 1 || r.Revision != info.CurrentRevision {
		t.Errorf("review on %s %d/%d %s; want %s %d/1 %s", r.Project, r.Change, r.PatchSet, r.Revision, project, n, info.CurrentRevision)
	}
	if r.Input.Message != in.Message || r.Input.Labels["Verified"] != 1 || r.Input.Tag != in.Tag || r.Input.Notify != "OWNER" {
		t.Errorf("review input = %+v; want %+v", r.Input, in)
	}
	if !strings.Contains(string(r.Input.Raw), `"notify":"OWNER"`) || r.At.Before(before) {
		t.Errorf("review raw %s at %v; want the body as sent, after %v", r.Input.Raw, r.At, before)
	}

	// The CI account's review comes back as a comment-added event.
	last := events[len(events)-1]
	for _, want := range []string{`comment-added {"author":{"name":"CI","email":"ci@example.com","username":"ci"}`,
		`"comment":"Patch Set 1: Verified+1\n\nBuild succeeded\n\n- unit: SUCCESS"`, `"value":"1","oldValue":"0"`} {
		if !strings.Contains(last, want) {
			t.Errorf("last event %s; want it to contain %s", last, want)
		}
	}

	detail, _, err := c.Changes.GetChangeDetail(t.Context(), changeID(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	if all := detail.Labels["Verified"].All; len(all) != 1 || all[0].Value != 1 || all[0].Username != "ci" {
		t.Errorf("detail labels Verified = %+v; want one +1 by ci", all)
	}
	if m := detail.Messages; len(m) != 1 || m[0].Tag != in.Tag || !strings.HasPrefix(m[0].Message, "Patch Set 1: Verified+1") {
		t.Errorf("detail messages = %+v; want the review's message with its tag", m)
	}

	g.Wipe()
	if got := g.Reviews(); len(got) != 0 {
		t.Errorf("Reviews() after Wipe = %+v; want none", got)
	}
	detail, _, _ = c.Changes.GetChangeDetail(t.Context(), changeID(n), nil)
	if all := detail.Labels["Verified"].All; len(all) != 0 {
		t.Errorf("detail labels Verified after Wipe = %+v; want none", all)
	}
}

func TestSetReviewOnOutdatedPatchSet(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	ps1, _, _ := c.Changes.GetChange(t.Context(), changeID(n), nil)
	upload(t, g, gerritsim.Upload{Change: n})

	in := &gerrit.ReviewInput{Message: "Build failed (built patch set 1, now outdated)", Labels: map[string]int{"Verified": -1}}
	if _, _, err := c.Changes.SetReview(t.Context(), changeID(n), ps1.CurrentRevision, in); err != nil {
		t.Fatalf("SetReview(outdated patch set 1): %v", err)
	}
	// A patch set number and a short sha name revisions too.
	if _, _, err := c.Changes.SetReview(t.Context(), changeID(n), "1", &gerrit.ReviewInput{Message: "again"}); err != nil {
		t.Fatalf("SetReview(revision \"1\"): %v", err)
	}
	if _, _, err := c.Changes.SetReview(t.Context(), changeID(n), ps1.CurrentRevision[:8], &gerrit.ReviewInput{Message: "short"}); err != nil {
		t.Fatalf("SetReview(short sha): %v", err)
	}
	got := g.ReviewsFor(n)
	if len(got) != 3 {
		t.Fatalf("ReviewsFor = %d reviews; want 3", len(got))
	}
	for i, r := range got {
		if r.PatchSet != 1 || r.Revision != ps1.CurrentRevision {
			t.Errorf("review %d on patch set %d %s; want 1 %s", i, r.PatchSet, r.Revision, ps1.CurrentRevision)
		}
	}
}

func TestSetReviewOnClosedChange(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	abandoned, _ := upload(t, g, gerritsim.Upload{Project: project})
	merged, _ := upload(t, g, gerritsim.Upload{Project: project})
	if _, err := g.Abandon(abandoned, gerritsim.Account{}, "not needed"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Merge(merged, gerritsim.Account{Name: "Submitter", Username: "sub"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{abandoned, merged} {
		in := &gerrit.ReviewInput{Message: "Build succeeded", Labels: map[string]int{"Verified": 1}}
		_, resp, err := c.Changes.SetReview(t.Context(), changeID(n), "current", in)
		if status(resp) != http.StatusConflict || err == nil || !strings.Contains(err.Error(), "409") {
			t.Errorf("SetReview(closed change %d, labels) = %d, %v; want 409", n, status(resp), err)
		}
		// A message alone is accepted on a closed change, as Gerrit does.
		if _, _, err := c.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Message: "change closed, no vote"}); err != nil {
			t.Errorf("SetReview(closed change %d, message only): %v", n, err)
		}
		if got := g.ReviewsFor(n); len(got) != 1 || len(got[0].Input.Labels) != 0 {
			t.Errorf("ReviewsFor(%d) = %+v; want only the message", n, got)
		}
	}
}

func TestSetReviewRejectsUnknownLabels(t *testing.T) {
	g := gerritsim.Start(t, gerritsim.Options{Labels: map[string]gerritsim.LabelRange{"CI-Verified": {Min: -1, Max: 1}}})
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	for _, labels := range []map[string]int{{"Verified": 1}, {"CI-Verified": 2}} {
		if _, resp, err := c.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Labels: labels}); status(resp) != http.StatusBadRequest {
			t.Errorf("SetReview(%v) = %d, %v; want 400", labels, status(resp), err)
		}
	}
	if _, _, err := c.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Labels: map[string]int{"CI-Verified": -1}}); err != nil {
		t.Errorf("SetReview(CI-Verified -1): %v", err)
	}
}

func TestAuthentication(t *testing.T) {
	g := gerritsim.Start(t, gerritsim.Options{User: "jenkins", Password: "s3cret/with+chars"})
	n, _ := upload(t, g, gerritsim.Upload{Project: project})

	bad := client(t, g, "jenkins", "wrong")
	if _, resp, err := bad.Changes.GetChange(t.Context(), changeID(n), nil); status(resp) != http.StatusUnauthorized || err == nil {
		t.Errorf("GetChange with a bad password = %d, %v; want 401", status(resp), err)
	} else if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("401 WWW-Authenticate = %q; want Basic", got)
	}
	if _, resp, _ := bad.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Message: "x"}); status(resp) != http.StatusUnauthorized {
		t.Errorf("SetReview with a bad password = %d; want 401", status(resp))
	}

	good := client(t, g, "jenkins", "s3cret/with+chars")
	self, _, err := good.Accounts.GetAccount(t.Context(), "self")
	if err != nil || self.Username != "jenkins" || self.AccountID == 0 {
		t.Errorf("GetAccount(self) = %+v, %v; want the CI account", self, err)
	}

	// Credentials in the URL make NewClient probe digest, then basic auth.
	u := strings.Replace(g.URL(), "http://", "http://jenkins:s3cret@", 1)
	if _, err := gerrit.NewClient(t.Context(), u, nil); !errors.Is(err, gerrit.ErrAuthenticationFailed) {
		t.Errorf("NewClient(bad credentials in URL) = %v; want ErrAuthenticationFailed", err)
	}
	// go-gerrit takes the password from the URL as it is written (a regexp,
	// no unescaping), so '/' and '+' appear raw.
	u = strings.Replace(g.URL(), "http://", "http://jenkins:s3cret/with+chars@", 1)
	if _, err := gerrit.NewClient(t.Context(), u, nil); err != nil {
		t.Errorf("NewClient(credentials in URL): %v", err)
	}

	// Anonymous reads work without /a/; writes need authentication.
	anon, err := gerrit.NewClient(t.Context(), g.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anon.Changes.GetChange(t.Context(), changeID(n), nil); err != nil {
		t.Errorf("anonymous GetChange: %v", err)
	}
	if _, resp, _ := anon.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Message: "x"}); status(resp) != http.StatusForbidden {
		t.Errorf("anonymous SetReview = %d; want 403", status(resp))
	}
	if got := g.Reviews(); len(got) != 0 {
		t.Errorf("Reviews() = %+v; want none", got)
	}
}

func TestFailWith(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project})

	g.FailWith(http.StatusInternalServerError, 300*time.Millisecond)
	before := g.Requests()
	if _, resp, err := c.Changes.SetReview(t.Context(), changeID(n), "current", &gerrit.ReviewInput{Labels: map[string]int{"Verified": 1}}); status(resp) != http.StatusInternalServerError || err == nil {
		t.Fatalf("SetReview during FailWith(500) = %d, %v; want 500", status(resp), err)
	}
	if got := g.Requests() - before; got != 1 {
		t.Errorf("Requests() grew by %d; want 1", got)
	}
	if got := g.Reviews(); len(got) != 0 {
		t.Errorf("Reviews() after a failed request = %+v; want none", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := c.Changes.SetReview(ctx, changeID(n), "current", &gerrit.ReviewInput{Labels: map[string]int{"Verified": 1}})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("SetReview still failing after FailWith ended: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := g.ReviewsFor(n); len(got) != 1 {
		t.Errorf("ReviewsFor after recovery = %d reviews; want 1", len(got))
	}

	g.FailWith(http.StatusServiceUnavailable, time.Hour)
	if _, resp, _ := c.Changes.GetChange(t.Context(), changeID(n), nil); status(resp) != http.StatusServiceUnavailable {
		t.Errorf("GetChange during FailWith(503) = %d; want 503", status(resp))
	}
	g.FailWith(0, 0)
	if _, _, err := c.Changes.GetChange(t.Context(), changeID(n), nil); err != nil {
		t.Errorf("GetChange after FailWith(0, 0): %v", err)
	}
}

func TestListFiles(t *testing.T) {
	g := gerritsim.Start(t)
	c := ciClient(t, g)
	n, _ := upload(t, g, gerritsim.Upload{Project: project, Files: []string{"src/frob.go", "docs/frob.md"}})
	upload(t, g, gerritsim.Upload{Change: n, Kind: gerritsim.KindTrivialRebase}) // same files
	upload(t, g, gerritsim.Upload{Change: n, Files: []string{"Makefile"}})
	info, _, _ := c.Changes.GetChange(t.Context(), changeID(n), &gerrit.ChangeOptions{AdditionalFields: []string{"ALL_REVISIONS"}})

	var ps1 string
	for sha, rev := range info.Revisions {
		if rev.Number == 1 {
			ps1 = sha
		}
	}
	for _, tc := range []struct {
		rev  string
		want []string
	}{
		{ps1, []string{"src/frob.go", "docs/frob.md"}},
		{"2", []string{"src/frob.go", "docs/frob.md"}},
		{"current", []string{"Makefile"}},
		{info.CurrentRevision, []string{"Makefile"}},
	} {
		files, _, err := c.Changes.ListFiles(t.Context(), changeID(n), tc.rev, nil)
		if err != nil {
			t.Fatalf("ListFiles(%s): %v", tc.rev, err)
		}
		if len(files) != len(tc.want)+1 {
			t.Errorf("ListFiles(%s) = %v; want /COMMIT_MSG and %v", tc.rev, files, tc.want)
		}
		for _, f := range append(tc.want, "/COMMIT_MSG") {
			if _, ok := files[f]; !ok {
				t.Errorf("ListFiles(%s) = %v; want %s in it", tc.rev, files, f)
			}
		}
	}
}

func TestListen(t *testing.T) {
	g, err := gerritsim.Listen("127.0.0.1:0", gerritsim.Options{URL: "https://review.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q; want the loopback address it listens on", g.URL())
	}
	n, _ := upload(t, g, gerritsim.Upload{Project: project})
	resp, err := http.Get(g.URL() + "/changes/" + changeID(n))
	if err != nil {
		t.Fatal(err)
	}
	body := new(strings.Builder)
	_, _ = io.Copy(body, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body.String(), ")]}'\n{") {
		t.Errorf("GET change = %d %q; want 200 and the magic prefix", resp.StatusCode, body)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get(g.URL() + "/changes/1"); err == nil {
		t.Errorf("GET after Close succeeded; want a connection error")
	}
}
