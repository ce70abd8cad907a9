// Package gerritsim plays Gerrit for tests and for the local demo.
//
// A Server holds changes, answers the REST endpoints that gerritflow and
// go-gerrit v1.2.0 call, accepts reviews, and produces the stream-event JSON
// that Gerrit 3.x emits. Every event also goes to the functions registered
// with OnEvent. KinesisSink turns each event into what the events-aws-kinesis
// plugin writes: one Kinesis record per event, with the event type as the
// partition key.
//
//	g := gerritsim.Start(t)
//	n, ps, ev, err := g.Upload(gerritsim.Upload{Project: "platform/core", Subject: "Fix"})
//	// ... the voter posts to g.URL() ...
//	if got := g.ReviewsFor(n); len(got) != 1 { ... }
//
// What it does as Gerrit does, so that clients meet the real behaviour:
//
//   - /a/... needs basic auth with Options.User/Password. Without it the
//     answer is 401 with WWW-Authenticate: Basic, which go-gerrit's digest
//     probe also gets. The same paths without /a/ may be read anonymously;
//     anything else there gets 403.
//   - Every JSON answer starts with ")]}'\n". Errors are plain text:
//     "Not found: <id>", "change is closed".
//   - A change id is <number>, <project>~<number> (the project URL-encoded,
//     so "/" is %2F; a raw "/" makes another path and gets 404), a Change-Id,
//     or <project>~<branch>~<Change-Id>. A revision is "current", a patch
//     set number, a sha, or a unique sha prefix.
//   - A review with labels on a MERGED or ABANDONED change gets 409; a
//     review with only a message is accepted. A review on an outdated patch
//     set is accepted and is recorded on that patch set. Labels that are not
//     configured, or values outside their range, get 400 (strict_labels, the
//     Gerrit default; see Options.Labels).
//   - A review accepted through REST is written by the CI account and comes
//     back as a comment-added event, as in Gerrit. gerritflow must ignore
//     those events.
//   - Each change to a change (upload, comment, abandon, restore, merge)
//     moves its NoteDb meta ref, and the server emits ref-updated for
//     refs/changes/NN/N/meta. A merge also emits ref-updated for the branch.
//     These events go only to OnEvent; the methods return the main event.
//   - eventCreatedOn is unix seconds and grows strictly within one server.
//     No two events share it, even when many come in the same second.
//
// Simplifications: the sim has no git, and the shas are random. Votes do not
// carry over to a new patch set (no sticky labels). ChangeInfo always has
// current_revision, as if CURRENT_REVISION had been asked for. The sim does
// not implement change queries (GET /changes/?q=).
package gerritsim
