package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNATSIdentityScripts runs the shell that puts a user into nats.url
// (Kubernetes' nats-identity init container, compose's config service) with
// this machine's sh and sed, and compares the result with renderNATSIdentity,
// which the manifest tests parse as a gerritflow config.
func TestNATSIdentityScripts(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh is needed to run the init scripts: %v", err)
	}
	if _, err := exec.LookPath("sed"); err != nil {
		t.Fatalf("sed is needed to run the init scripts: %v", err)
	}
	src := string(read(t, "deploy", "compose", "gerritflow.yaml"))
	const pw = "0123456789abcdef0123456789abcdef"

	t.Run("kubernetes", func(t *testing.T) {
		dir := t.TempDir()
		for _, d := range []string{"etc", "run"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", "gerritflow.yaml"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		script := strings.NewReplacer("/etc/gerritflow/", dir+"/etc/", "/run/gerritflow/", dir+"/run/").Replace(natsIdentityScript)
		cmd := exec.Command(sh, "-euc", script)
		cmd.Env = []string{"NATS_USER=parser", "NATS_PASSWORD=" + pw, "PATH=" + os.Getenv("PATH")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		got, err := os.ReadFile(filepath.Join(dir, "run", "gerritflow.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if want := renderNATSIdentity(src, "parser", pw); string(got) != want {
			t.Errorf("the init container writes\n%s\nwant\n%s", got, want)
		}
		if st, err := os.Stat(filepath.Join(dir, "run", "gerritflow.yaml")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("rendered config mode %v (%v); want 0600", st.Mode().Perm(), err)
		}
	})

	t.Run("compose", func(t *testing.T) {
		p := loadCompose(t, composeEnv(t))
		s, err := p.GetService("config")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "gerritflow.yaml"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		script := strings.NewReplacer("/etc/gerritflow/gerritflow.yaml", dir+"/gerritflow.yaml",
			"/run/gerritflow/", dir+"/out/", "chown -R 65532:65532", "true").Replace(s.Command[2])
		cmd := exec.Command(sh, s.Command[1], script)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range s.Environment {
			cmd.Env = append(cmd.Env, k+"="+*v)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		pws := testPasswords(t)
		for _, u := range append(Services[:len(Services):len(Services)], "gfctl-admin", "status-reader") {
			f := filepath.Join(dir, "out", u, "gerritflow.yaml")
			got, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if want := renderNATSIdentity(src, u, pws[u]); string(got) != want {
				t.Errorf("%s: the config service writes\n%s\nwant\n%s", u, got, want)
			}
			if st, _ := os.Stat(f); st.Mode().Perm() != 0o400 {
				t.Errorf("%s: mode %v; want 0400", f, st.Mode().Perm())
			}
		}
	})
}
