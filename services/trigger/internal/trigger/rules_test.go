package trigger

import (
	"encoding/json"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
)

type jobOpt func(*config.Job)

func job(opts ...jobOpt) Job {
	j := config.Job{Name: "unit", JenkinsJob: "folder/unit", Projects: []string{"platform/core", "glob:tools/**", "regex:^infra/.*"},
		Events: []config.EventRule{{Type: "patchset-created"}}}
	for _, o := range opts {
		o(&j)
	}
	c, err := Compile([]config.Job{j})
	if err != nil {
		panic(err)
	}
	return c[0]
}

func branches(b ...string) jobOpt { return func(j *config.Job) { j.Branches = b } }
func topics(t ...string) jobOpt   { return func(j *config.Job) { j.Topics = t } }
func rule(r config.EventRule) jobOpt {
	return func(j *config.Job) { j.Events = []config.EventRule{r} }
}

func ev(t *testing.T, js string) *event.Event {
	t.Helper()
	e, err := event.Parse([]byte(js), 0)
	if err != nil {
		t.Fatalf("Parse(%s) = %v", js, err)
	}
	return e
}

func patchset(project, branch, kind string, extra string) string {
	return `{"type":"patchset-created","eventCreatedOn":1700000000,"change":{"project":"` + project + `","branch":"` + branch +
		`","number":1234,"id":"I0123456789abcdef0123456789abcdef01234567","subject":"s","url":"http://g/c/1234","owner":{"name":"Ann","email":"ann@x","username":"ann"}` + extra +
		`},"patchSet":{"number":2,"revision":"0123456789abcdef0123456789abcdef01234567","ref":"refs/changes/34/1234/2","kind":"` + kind +
		`","uploader":{"name":"Ann","email":"ann@x","username":"ann"}},"uploader":{"name":"Ann","email":"ann@x","username":"ann"}}`
}

func comment(text string, approvals string) string {
	b, _ := json.Marshal(text)
	return `{"type":"comment-added","eventCreatedOn":1700000100,"change":{"project":"platform/core","branch":"main","number":1234},` +
		`"patchSet":{"number":2,"revision":"0123456789abcdef0123456789abcdef01234567"},"author":{"name":"Bob","username":"bob"},"comment":` + string(b) +
		`,"approvals":[` + approvals + `]}`
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name string
		job  Job
		ev   string
		want bool
	}{
		{"plain project", job(), patchset("platform/core", "main", "REWORK", ""), true},
		{"other project", job(), patchset("platform/other", "main", "REWORK", ""), false},
		{"glob project", job(), patchset("tools/a/b", "main", "REWORK", ""), true},
		{"regex project", job(), patchset("infra/net", "main", "REWORK", ""), true},
		{"branch configured", job(branches("main", "glob:release/*")), patchset("platform/core", "release/1.0", "REWORK", ""), true},
		{"branch not configured", job(branches("main")), patchset("platform/core", "dev", "REWORK", ""), false},
		{"topic", job(topics("glob:feature-*")), patchset("platform/core", "main", "REWORK", `,"topic":"feature-x"`), true},
		{"topic missing", job(topics("glob:feature-*")), patchset("platform/core", "main", "REWORK", ""), false},
		{"trivial rebase excluded", job(rule(config.EventRule{Type: "patchset-created", ExcludeTrivialRebase: true})), patchset("platform/core", "main", "TRIVIAL_REBASE", ""), false},
		{"trivial rebase with message excluded", job(rule(config.EventRule{Type: "patchset-created", ExcludeTrivialRebase: true})), patchset("platform/core", "main", "TRIVIAL_REBASE_WITH_MESSAGE_UPDATE", ""), false},
		{"trivial rebase allowed", job(), patchset("platform/core", "main", "TRIVIAL_REBASE", ""), true},
		{"no code change excluded", job(rule(config.EventRule{Type: "patchset-created", ExcludeNoCodeChange: true})), patchset("platform/core", "main", "NO_CODE_CHANGE", ""), false},
		{"wip excluded", job(rule(config.EventRule{Type: "patchset-created", ExcludeWIP: true})), patchset("platform/core", "main", "REWORK", `,"wip":true`), false},
		{"private excluded", job(rule(config.EventRule{Type: "patchset-created", ExcludePrivate: true})), patchset("platform/core", "main", "REWORK", `,"private":true`), false},
		{"recheck comment", job(rule(config.EventRule{Type: "comment-added", Comment: `(?mi)^\s*recheck\s*$`})), comment("Patch Set 2:\n\nrecheck", ""), true},
		{"recheck without (?m)", job(rule(config.EventRule{Type: "comment-added", Comment: `^recheck$`})), comment("Patch Set 2:\n\nrecheck", ""), true},
		{"other comment", job(rule(config.EventRule{Type: "comment-added", Comment: `(?mi)^\s*recheck\s*$`})), comment("Patch Set 2:\n\nlooks good, please recheck later", ""), false},
		{"wrong type", job(), comment("recheck", ""), false},
		{"gate: CR+2 newly given with W+1", job(rule(config.EventRule{Type: "comment-added", Approvals: map[string]int{"Code-Review": 2, "Workflow": 1}})),
			comment("Patch Set 2: Code-Review+2", `{"type":"Code-Review","value":"2","oldValue":"0"},{"type":"Workflow","value":"1"}`), true},
		{"gate: standing votes repeated", job(rule(config.EventRule{Type: "comment-added", Approvals: map[string]int{"Code-Review": 2, "Workflow": 1}})),
			comment("Patch Set 2:\n\nnit", `{"type":"Code-Review","value":"2"},{"type":"Workflow","value":"1"}`), false},
		{"gate: CR+1 too low", job(rule(config.EventRule{Type: "comment-added", Approvals: map[string]int{"Code-Review": 2}})),
			comment("Patch Set 2: Code-Review+1", `{"type":"Code-Review","value":"1","oldValue":"0"}`), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := Match(tt.job, ev(t, tt.ev)); got != tt.want {
				t.Errorf("Match = %v (%s); want %v", got, why, tt.want)
			}
		})
	}
}

func TestParamsPatchset(t *testing.T) {
	j := job(func(c *config.Job) { c.Parameters = map[string]string{"EXTRA": "value"} })
	p := Params(j, ev(t, patchset("platform/core", "main", "REWORK", "")), "1234-2-abc.unit", "https://review.example.com:8443/")
	want := map[string]string{
		"GERRITFLOW_BUILD_ID":           "1234-2-abc.unit",
		"GERRIT_EVENT_TYPE":             "patchset-created",
		"GERRIT_PROJECT":                "platform/core",
		"GERRIT_BRANCH":                 "main",
		"GERRIT_CHANGE_NUMBER":          "1234",
		"GERRIT_CHANGE_ID":              "I0123456789abcdef0123456789abcdef01234567",
		"GERRIT_PATCHSET_NUMBER":        "2",
		"GERRIT_PATCHSET_REVISION":      "0123456789abcdef0123456789abcdef01234567",
		"GERRIT_REFSPEC":                "refs/changes/34/1234/2",
		"GERRIT_CHANGE_URL":             "http://g/c/1234",
		"GERRIT_CHANGE_OWNER":           `"Ann" <ann@x>`,
		"GERRIT_CHANGE_OWNER_EMAIL":     "ann@x",
		"GERRIT_PATCHSET_UPLOADER_NAME": "Ann",
		"GERRIT_EVENT_ACCOUNT_NAME":     "Ann",
		"GERRIT_HOST":                   "review.example.com",
		"GERRIT_PORT":                   "8443",
		"GERRIT_SCHEME":                 "https",
		"EXTRA":                         "value",
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("Params[%s] = %q; want %q", k, p[k], v)
		}
	}
}

func TestParamsRefUpdated(t *testing.T) {
	j := job(rule(config.EventRule{Type: "ref-updated"}))
	e := ev(t, `{"type":"ref-updated","eventCreatedOn":5,"submitter":{"name":"C","email":"c@x"},"refUpdate":{"oldRev":"a","newRev":"b","refName":"refs/heads/main","project":"platform/core"}}`)
	if ok, why := Match(j, e); !ok {
		t.Fatalf("Match(ref-updated) = false (%s)", why)
	}
	p := Params(j, e, "ref-x.unit", "")
	for k, v := range map[string]string{"GERRIT_REFNAME": "refs/heads/main", "GERRIT_OLDREV": "a", "GERRIT_NEWREV": "b", "GERRIT_PROJECT": "platform/core", "GERRIT_BRANCH": "main"} {
		if p[k] != v {
			t.Errorf("Params[%s] = %q; want %q", k, p[k], v)
		}
	}
	if _, ok := p["GERRIT_CHANGE_NUMBER"]; ok {
		t.Error("ref-updated has GERRIT_CHANGE_NUMBER; it carries no change")
	}
}

func TestRefspecComputed(t *testing.T) {
	e := ev(t, `{"type":"patchset-created","change":{"project":"p","branch":"main","number":7},"patchSet":{"number":3,"revision":"abc"}}`)
	if got := Params(job(func(c *config.Job) { c.Projects = []string{"p"} }), e, "x", "")["GERRIT_REFSPEC"]; got != "refs/changes/07/7/3" {
		t.Errorf("GERRIT_REFSPEC = %q; want refs/changes/07/7/3", got)
	}
}
