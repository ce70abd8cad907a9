package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadDesignExample(t *testing.T) {
	c, err := Load([]string{"--config", "testdata/good.yaml"}, func(string) string { return "" })
	if err != nil {
		t.Fatalf("Load(good.yaml) = %v", err)
	}
	if len(c.Jobs) != 1 || c.Jobs[0].JenkinsJob != "folder/unit-tests" || !c.Jobs[0].IsVoting() {
		t.Errorf("jobs = %+v; want one voting job folder/unit-tests", c.Jobs)
	}
	if c.Jobs[0].Events[1].Comment != `(?mi)^\s*recheck\s*$` {
		t.Errorf("comment = %q", c.Jobs[0].Events[1].Comment)
	}
	if c.Vote.Outdated != "post" || c.Parser.MaxEventBytes != 1<<20 {
		t.Errorf("defaults not applied: %+v %+v", c.Vote, c.Parser)
	}
	if c.Listen.For("monitor") != "127.0.0.1:9104" {
		t.Errorf("Listen.For(monitor) = %q", c.Listen.For("monitor"))
	}
}

func TestLoadFromEnv(t *testing.T) {
	env := map[string]string{"GERRITFLOW_CONFIG": "testdata/good.yaml"}
	if _, err := Load(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("Load with GERRITFLOW_CONFIG = %v", err)
	}
	if _, err := Load(nil, func(string) string { return "" }); err != ErrNoConfig {
		t.Errorf("Load with nothing = %v; want ErrNoConfig", err)
	}
	if _, err := Load([]string{"--verbose"}, func(string) string { return "" }); err == nil {
		t.Error("Load(--verbose) = nil error; want a flag error")
	}
}

// TestBadConfig changes one thing of the good file at a time; each error must name its key.
func TestBadConfig(t *testing.T) {
	good, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"unknown key", "creds: \"\"", "cred: \"\"", "field cred not found"},
		{"bad nats url", "nats://127.0.0.1:4222", "http://x:1", "nats.url"},
		{"bad kinesis start", "start: latest", "start: earliest", "kinesis.start"},
		{"bad regexp", `'(?mi)^\s*recheck\s*$'`, `'(recheck'`, "jobs[0].events[1].comment"},
		{"bad event type", "type: patchset-created", "type: patchset-uploaded", "jobs[0].events[0].type"},
		{"bad project regex", `"regex:^infra/.*"`, `"regex:(["`, "jobs[0].projects[2]"},
		{"missing jenkins job", "jenkins_job: folder/unit-tests", "jenkins_job: \"\"", "jobs[0].jenkins_job"},
		{"bad notify", "notify: OWNER", "notify: EVERYONE", "vote.notify"},
		{"bad listen", `bridge: "127.0.0.1:9101"`, `bridge: "nowhere"`, "listen.bridge"},
		{"reserved parameter", `EXTRA: "value"`, `GERRIT_PROJECT: "x"`, "jobs[0].parameters.GERRIT_PROJECT"},
		{"bad duration", "nats:     { url: nats://127.0.0.1:4222, creds: \"\" }", "nats: { url: nats://127.0.0.1:4222 }\nmonitor: { poll_interval: often }", "not a duration"},
		{"positive failure", "failure: -1", "failure: 1", "vote.failure"},
		{"nats user without password", "creds: \"\"", "user: parser", "nats.password_env: required with a NATS user"},
		{"nats password without user", "creds: \"\"", "password_env: NP", "nats.user: required with a NATS password"},
		{"nats user twice", "creds: \"\"", "user: parser, user_env: NU, password_env: NP", "nats.user_env: set nats.user or nats.user_env"},
		{"nats password twice", "creds: \"\"", "user: parser, password_env: NP, password_file: /run/p", "nats.password_file: set nats.password_env or"},
		{"nats creds and user", "creds: \"\"", "creds: /run/x.creds, user: parser, password_env: NP", "nats.creds: a .creds file and a user/password"},
		{"nats user and url credentials", "url: nats://127.0.0.1:4222, creds: \"\"", "url: \"nats://a:b@127.0.0.1:4222\", user: parser, password_env: NP", "nats.url: holds credentials"},
		{"nats inbox prefix wildcard", "creds: \"\"", "inbox_prefix: \"_INBOX_parser.>\"", "nats.inbox_prefix: \"_INBOX_parser.>\" is not a subject"},
		{"nats inbox prefix trailing dot", "creds: \"\"", "inbox_prefix: \"_INBOX_parser.\"", "nats.inbox_prefix"},
		{"nats inbox prefix space", "creds: \"\"", "inbox_prefix: \"_INBOX parser\"", "nats.inbox_prefix"},
		{"nats inbox prefix empty token", "creds: \"\"", "inbox_prefix: \"_INBOX..parser\"", "nats.inbox_prefix"},
		{"nats user not a token", "creds: \"\"", "user: ci.bot, password_env: NP", "nats.inbox_prefix: user \"ci.bot\" cannot be an inbox token; set nats.inbox_prefix"},
		{"nats url user not a token", "url: nats://127.0.0.1:4222, creds: \"\"", "url: \"nats://ci*bot:pw@127.0.0.1:4222\"", "nats.inbox_prefix: user \"ci*bot\" cannot be an inbox token"},
		{"nats urls of two users", "url: nats://127.0.0.1:4222, creds: \"\"", "url: \"nats://a:pw@127.0.0.1:4222,nats://b:pw@127.0.0.2:4222\"", "nats.inbox_prefix: nats.url logs in as several users (a, b)"},
		{"jenkins token twice", "token_env: JENKINS_TOKEN", "token_env: JENKINS_TOKEN, token_file: /run/t", "jenkins.token_file: set jenkins.token_env or jenkins.token_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Contains(good, []byte(tt.old)) {
				t.Fatalf("fixture does not contain %q", tt.old)
			}
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, bytes.Replace(good, []byte(tt.old), []byte(tt.new), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadFile(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadFile = %v; want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	_, err := Parse(strings.NewReader("vote: { notify: X, outdated: y }\njobs: [ { name: a } ]\n"))
	if err == nil {
		t.Fatal("Parse = nil error")
	}
	for _, key := range []string{"vote.notify", "vote.outdated", "jobs[0].jenkins_job", "jobs[0].events", "jobs[0].projects"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %+v %#v", s, s, s, s), buf.String()} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Errorf("Reveal = %q", s.Reveal())
	}
	c := &Config{Jenkins: Jenkins{URL: "http://j", TokenEnv: "JT"}}
	if _, err := c.JenkinsToken(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "jenkins.token_env: environment variable JT") {
		t.Errorf("JenkinsToken with JT unset = %v; want an error naming jenkins.token_env", err)
	}
}

// TestSecretsFromEnvAndFiles reads every credential the way a deployment
// hands it over: an environment variable, or a mounted secret file whose
// trailing line break is not part of the secret. Errors name the key and
// never hold the secret.
func TestSecretsFromEnvAndFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{"NU": "parser", "NP": "pw-from-env", "JT": "token-from-env"}
	getenv := func(k string) string { return env[k] }

	n := NATS{UserEnv: "NU", PasswordFile: write("nats", "pw-from-file\n")}
	if u, p, err := n.UserPassword(getenv); err != nil || u != "parser" || p.Reveal() != "pw-from-file" {
		t.Errorf("UserPassword(user_env, password_file) = %q, %q, %v; want parser, pw-from-file", u, p.Reveal(), err)
	}
	n = NATS{User: "voter", PasswordEnv: "NP"}
	if u, p, err := n.UserPassword(getenv); err != nil || u != "voter" || p.Reveal() != "pw-from-env" {
		t.Errorf("UserPassword(user, password_env) = %q, %q, %v; want voter, pw-from-env", u, p.Reveal(), err)
	}
	if u, _, err := (NATS{Creds: "/x.creds"}).UserPassword(getenv); err != nil || u != "" {
		t.Errorf("UserPassword(creds only) = %q, %v; want no user", u, err)
	}
	if _, _, err := (NATS{UserEnv: "UNSET", PasswordEnv: "NP"}).UserPassword(getenv); err == nil || !strings.Contains(err.Error(), "nats.user_env: environment variable UNSET") {
		t.Errorf("UserPassword(unset user_env) = %v; want an error naming nats.user_env", err)
	}

	c := &Config{Jenkins: Jenkins{URL: "http://j", TokenFile: write("token", "token-from-file\r\n")},
		Gerrit: Gerrit{URL: "http://g", PasswordFile: filepath.Join(dir, "missing")}}
	if tok, err := c.JenkinsToken(getenv); err != nil || tok.Reveal() != "token-from-file" {
		t.Errorf("JenkinsToken(token_file) = %q, %v; want token-from-file", tok.Reveal(), err)
	}
	if _, err := c.GerritPassword(getenv); err == nil || !strings.Contains(err.Error(), "gerrit.password_file: read "+filepath.Join(dir, "missing")) {
		t.Errorf("GerritPassword(missing file) = %v; want an error naming gerrit.password_file and the path", err)
	}
	c.Gerrit.PasswordFile = write("empty", "\n")
	if _, err := c.GerritPassword(getenv); err == nil || !strings.Contains(err.Error(), "gerrit.password_file: "+c.Gerrit.PasswordFile+" is empty") {
		t.Errorf("GerritPassword(empty file) = %v; want an error saying the file is empty", err)
	}
	c.Gerrit.PasswordFile = write("gerrit", "s3cret")
	if pw, err := c.GerritPassword(getenv); err != nil || pw.Reveal() != "s3cret" {
		t.Errorf("GerritPassword(password_file) = %q, %v", pw.Reveal(), err)
	}
}

func TestPattern(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"platform/core", "platform/core", true},
		{"platform/core", "platform/core2", false},
		{"glob:tools/**", "tools/a/b", true},
		{"glob:tools/**", "tools", false},
		{"glob:release/*", "release/1.0", true},
		{"glob:release/*", "release/1.0/hotfix", false},
		{"glob:**/docs/**", "docs/a", true},
		{"glob:src/**/*.go", "src/main.go", true},
		{"glob:src/**/*.go", "src/a/b/main.go", true},
		{"glob:a?c", "abc", true},
		{"glob:a.c", "abc", false},
		{"regex:^infra/.*", "infra/net", true},
		{"regex:infra", "my-infra", false},
	}
	for _, tt := range tests {
		p, err := CompilePattern(tt.pattern)
		if err != nil {
			t.Fatalf("CompilePattern(%q) = %v", tt.pattern, err)
		}
		if got := p.Match(tt.name); got != tt.want {
			t.Errorf("Pattern(%q).Match(%q) = %v; want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestStatusSection(t *testing.T) {
	c, err := Parse(strings.NewReader(`listen: { status: "127.0.0.1:9106" }
status:
  gerrit_web_url: https://review.example.com
  jaeger_url: http://127.0.0.1:16686
  recent: 30m
  max_buildsets: 500
`))
	if err != nil {
		t.Fatalf("Parse(status section) = %v", err)
	}
	if got := c.Listen.For("status"); got != "127.0.0.1:9106" {
		t.Errorf("Listen.For(status) = %q; want 127.0.0.1:9106", got)
	}
	want := Status{GerritWebURL: "https://review.example.com", JaegerURL: "http://127.0.0.1:16686",
		Recent: Duration(30 * time.Minute), MaxBuildSets: 500}
	if c.Status != want {
		t.Errorf("Status = %+v; want %+v", c.Status, want)
	}

	d, err := Parse(strings.NewReader("nats: { url: nats://127.0.0.1:4222 }\n"))
	if err != nil {
		t.Fatalf("Parse(no status section) = %v", err)
	}
	if d.Status.Recent.D() != time.Hour || d.Status.MaxBuildSets != 10000 || d.Status.JaegerURL != "" {
		t.Errorf("Status defaults = %+v; want recent 1h, max_buildsets 10000, no jaeger_url", d.Status)
	}
}

func TestBadStatusSection(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"bad listen", `listen: { status: "nowhere" }`, "listen.status"},
		{"jaeger not a url", `status: { jaeger_url: "jaeger" }`, "status.jaeger_url"},
		{"jaeger bad scheme", `status: { jaeger_url: "ftp://jaeger:16686" }`, "status.jaeger_url"},
		{"gerrit web not a url", `status: { gerrit_web_url: "review" }`, "status.gerrit_web_url"},
		{"negative recent", `status: { recent: -5m }`, "status.recent"},
		{"recent not a duration", `status: { recent: soon }`, "not a duration"},
		{"negative max", `status: { max_buildsets: -1 }`, "status.max_buildsets"},
		{"unknown key", `status: { recnet: 5m }`, "field recnet not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.doc + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %v; want an error naming %q", tt.doc, err, tt.want)
			}
		})
	}
}

// TestNATSInbox checks the inbox prefix rule: nats.inbox_prefix when set,
// else _INBOX_<user> for a user from nats.user, nats.user_env or nats.url,
// else nats.go's _INBOX.
func TestNATSInbox(t *testing.T) {
	for _, tt := range []struct {
		name string
		n    NATS
		user string // as UserPassword resolved it
		want string
	}{
		{"no auth", NATS{URL: "nats://127.0.0.1:4222"}, "", "_INBOX"},
		{"creds file", NATS{URL: "nats://127.0.0.1:4222", Creds: "/run/x.creds"}, "", "_INBOX"},
		{"client certificate", NATS{URL: "tls://127.0.0.1:4222", CertFile: "c.pem", KeyFile: "k.pem"}, "", "_INBOX"},
		{"token in the url", NATS{URL: "nats://s3cr3t@127.0.0.1:4222"}, "", "_INBOX"},
		{"nats.user", NATS{User: "parser", PasswordEnv: "NP"}, "parser", "_INBOX_parser"},
		{"nats.user_env", NATS{UserEnv: "NU", PasswordEnv: "NP"}, "gfctl-admin", "_INBOX_gfctl-admin"},
		{"user in the url", NATS{URL: "nats://voter:pw@127.0.0.1:4222"}, "", "_INBOX_voter"},
		{"escaped user in the url", NATS{URL: "nats://status%2Dreader:p%40w@127.0.0.1:4222"}, "", "_INBOX_status-reader"},
		{"same user in every url", NATS{URL: "nats://bridge:pw@n1:4222, nats://bridge:pw@n2:4222,nats://n3:4222"}, "", "_INBOX_bridge"},
		{"explicit", NATS{User: "ci.bot", PasswordEnv: "NP", InboxPrefix: "_INBOX.ci-bot"}, "ci.bot", "_INBOX.ci-bot"},
		{"explicit without user", NATS{Creds: "/run/x.creds", InboxPrefix: "_INBOX_trigger"}, "", "_INBOX_trigger"},
		{"from the environment", NATS{Creds: "/run/x.creds", InboxPrefixEnv: "NI"}, "", "_INBOX_monitor"},
		{"from the environment over the user", NATS{User: "ci.bot", PasswordEnv: "NP", InboxPrefixEnv: "NI"}, "ci.bot", "_INBOX_monitor"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.n.Inbox(tt.user, getenvOf(map[string]string{"NI": "_INBOX_monitor"}))
			if err != nil || got != tt.want {
				t.Errorf("Inbox(%q) = %q, %v; want %q", tt.user, got, err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		n    NATS
		user string
		want string
	}{
		{"dot", NATS{UserEnv: "NU", PasswordEnv: "NP"}, "ci.bot", `nats.inbox_prefix: user "ci.bot" cannot be an inbox token; set nats.inbox_prefix`},
		{"star", NATS{User: "a*", PasswordEnv: "NP"}, "a*", `user "a*" cannot be an inbox token`},
		{"gt", NATS{User: "a>", PasswordEnv: "NP"}, "a>", `user "a>" cannot be an inbox token`},
		{"space", NATS{User: "a b", PasswordEnv: "NP"}, "a b", `user "a b" cannot be an inbox token`},
		{"tab in the url", NATS{URL: "nats://a%09b:pw@127.0.0.1:4222"}, "", `user "a\tb" cannot be an inbox token`},
		{"two users in the urls", NATS{URL: "nats://a:pw@n1:4222,nats://b:pw@n2:4222"}, "", "nats.url logs in as several users (a, b)"},
		{"bad explicit", NATS{InboxPrefix: "_INBOX.*"}, "", `nats.inbox_prefix: "_INBOX.*" is not a subject`},
		{"unset variable", NATS{InboxPrefixEnv: "NI_UNSET"}, "", "nats.inbox_prefix_env: environment variable NI_UNSET is empty or unset"},
		{"bad variable", NATS{InboxPrefixEnv: "NI_BAD"}, "", `nats.inbox_prefix_env: NI_BAD="_INBOX..x" is not a subject`},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			got, err := tt.n.Inbox(tt.user, getenvOf(map[string]string{"NI_BAD": "_INBOX..x"}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Inbox(%q) = %q, %v; want an error with %q", tt.user, got, err, tt.want)
			}
		})
	}
	c, err := Parse(strings.NewReader("nats: { url: \"nats://parser:pw@127.0.0.1:4222\", inbox_prefix: _INBOX_gf.parser }\n"))
	if err != nil || c.NATS.InboxPrefix != "_INBOX_gf.parser" {
		t.Fatalf("Parse with nats.inbox_prefix = %+v, %v", c, err)
	}
	if _, err := Parse(strings.NewReader("nats: { creds: /run/x.creds, inbox_prefix: _INBOX_a, inbox_prefix_env: NI }\n")); err == nil || !strings.Contains(err.Error(), "nats.inbox_prefix_env: set nats.inbox_prefix or nats.inbox_prefix_env, not both") {
		t.Errorf("Parse with both inbox keys = %v; want an error naming nats.inbox_prefix_env", err)
	}
	// A user from user_env is known only at connect time: Parse accepts it.
	if _, err := Parse(strings.NewReader("nats: { user_env: NU, password_env: NP }\n")); err != nil {
		t.Errorf("Parse with nats.user_env = %v", err)
	}
}

// getenvOf looks variables up in env (nil: every variable unset).
func getenvOf(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}
