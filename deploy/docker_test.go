package deploy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
	stage     int // index of the FROM it belongs to (-1 before the first)
}

// parseDockerfile splits a Dockerfile into instructions the way BuildKit's
// parser does for what this file uses: comments and parser directives
// dropped, backslash continuations joined.
func parseDockerfile(data string) []instruction {
	var out []instruction
	stage := -1
	var cur strings.Builder
	for _, line := range strings.Split(data, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, instruction{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
		cur.Reset()
	}
	return out
}

func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(string(read(t, "deploy", "docker", "Dockerfile")))
	var froms []instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d stages; want build and final", len(froms))
	}
	final := len(froms) - 1
	if froms[final].args != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %s; want gcr.io/distroless/static-debian12:nonroot", froms[final].args)
	}
	of := func(stage int, cmd string) []string {
		var args []string
		for _, in := range ins {
			if in.stage == stage && in.cmd == cmd {
				args = append(args, in.args)
			}
		}
		return args
	}
	if !slices.Contains(of(0, "ARG"), "SERVICE") || !slices.Contains(of(0, "COPY"), ". .") {
		t.Error("the build stage lacks ARG SERVICE or COPY . . (the workspace root is the context)")
	}
	build := strings.Join(of(0, "RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "go build", `./services/${SERVICE}`, "./cmd/gfctl"} {
		if !strings.Contains(build, want) {
			t.Errorf("the build does not use %s", want)
		}
	}
	for _, svc := range Services {
		if _, err := os.Stat(path(t, "services", svc, "go.mod")); err != nil {
			t.Errorf("services/%s: %v", svc, err)
		}
	}
	users := of(final, "USER")
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Errorf("final stage USER %v; want one non-root user", users)
	}
	if len(of(final, "ENTRYPOINT")) != 1 || len(of(final, "HEALTHCHECK")) != 0 {
		t.Error("final stage: want an ENTRYPOINT and no HEALTHCHECK (distroless has nothing to run one with)")
	}
	gowork := string(read(t, "go.work"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gowork)
	if len(goVersion) < 2 || !slices.Contains(of(-1, "ARG"), "GO_VERSION="+goVersion[1]) {
		t.Errorf("ARG GO_VERSION does not match go.work's go %v", goVersion)
	}

	ignore := strings.Fields(string(read(t, ".dockerignore")))
	for _, want := range []string{"bin/", ".dev/", "**/node_modules"} {
		if !slices.Contains(ignore, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	for _, p := range ignore {
		if m, _ := filepath.Match(p, "go.work"); m || p == "deploy" || p == "streams" || p == "pkg" {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
}

// TestDockerfileBuild runs the build stage's RUN script on this machine for
// every SERVICE (as the image build would, from the workspace root) and
// checks that each binary is static: the distroless static image has no libc.
func TestDockerfileBuild(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("sh is needed to run the Dockerfile's build script: %v", err)
	}
	var script string
	for _, in := range parseDockerfile(string(read(t, "deploy", "docker", "Dockerfile"))) {
		if in.stage == 0 && in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			script = in.args
		}
	}
	// Drop RUN's own flags (--mount=...): the rest is the shell script.
	for strings.HasPrefix(script, "--") {
		_, script, _ = strings.Cut(script, " ")
		script = strings.TrimSpace(script)
	}
	out := t.TempDir()
	script = strings.ReplaceAll(script, "/out/gerritflow", out+"/gerritflow")
	for _, svc := range append(append(slices.Clone(Services), Viewers...), "gfctl", "gfdev") {
		t.Run(svc, func(t *testing.T) {
			cmd := exec.Command(sh, "-c", script)
			cmd.Dir = root(t)
			cmd.Env = append(os.Environ(), "SERVICE="+svc)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("SERVICE=%s: %v\n%s", svc, err, b)
			}
			f, err := elf.Open(filepath.Join(out, "gerritflow"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("SERVICE=%s: the binary needs a dynamic loader", svc)
				}
			}
			if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("SERVICE=%s: the binary links %v", svc, libs)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		cmd := exec.Command(sh, "-c", script)
		cmd.Dir = root(t)
		cmd.Env = append(os.Environ(), "SERVICE=nosuch")
		if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "no command") {
			t.Errorf("SERVICE=nosuch: err %v, output %s; want a clear refusal", err, b)
		}
	})
}
