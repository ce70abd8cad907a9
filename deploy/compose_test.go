package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// composeEnv is the environment docker compose would read from
// deploy/compose/dev.env, with test values.
func composeEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	env := []string{"JENKINS_TOKEN=test-jenkins-token", "GERRIT_HTTP_PASSWORD=test-gerrit-password"}
	for u, pw := range testPasswords(t) {
		env = append(env, natsauth.PasswordEnv(u)+"="+pw)
	}
	return append(env, extra...)
}

// loadCompose loads docker-compose.yml as docker compose does (compose-go,
// the library of the docker compose CLI), with profiles enabled.
func loadCompose(t *testing.T, env []string, profiles ...string) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path(t, "docker-compose.yml")},
		cli.WithWorkingDirectory(root(t)), cli.WithEnv(env), cli.WithProfiles(profiles), cli.WithName("gerritflow"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml with profiles %v: %v", profiles, err)
	}
	return p
}

func TestComposeNeedsItsSecrets(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{path(t, "docker-compose.yml")},
		cli.WithWorkingDirectory(root(t)), cli.WithEnv([]string{"JENKINS_TOKEN=x", "GERRIT_HTTP_PASSWORD=y"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = opts.LoadProject(context.Background())
	if err == nil || !strings.Contains(err.Error(), "NATS_PASSWORD") {
		t.Fatalf("docker-compose.yml without the NATS passwords: err = %v; want it to name the missing variable", err)
	}
}

func TestComposeSingle(t *testing.T) {
	p := loadCompose(t, composeEnv(t))
	checkCompose(t, p)
	if _, err := p.GetService("nats-2"); err == nil {
		t.Error("nats-2 runs without the cluster profile")
	}
	if _, err := p.GetService("provision-r3"); err == nil {
		t.Error("provision-r3 runs without the cluster profile")
	}
	o := natsConfigOf(t, p, "nats")
	if o.Cluster.Port != 0 {
		t.Error("the default nats service is configured as a cluster node")
	}
}

func TestComposeCluster(t *testing.T) {
	p := loadCompose(t, composeEnv(t, "GERRITFLOW_NATS_CONFIG=nats-cluster.conf"), "cluster")
	checkCompose(t, p)
	names := map[string]string{}
	var routes []string
	for _, n := range []string{"nats", "nats-2", "nats-3"} {
		s, err := p.GetService(n)
		if err != nil {
			t.Fatalf("cluster profile: %v", err)
		}
		t.Setenv("NATS_SERVER_NAME", envValue(s, "NATS_SERVER_NAME"))
		o := natsConfigOf(t, p, n)
		if o.Cluster.Port == 0 || o.Cluster.Name == "" {
			t.Errorf("%s is not a cluster node", n)
		}
		if prev, dup := names[o.ServerName]; dup || o.ServerName == "" {
			t.Errorf("%s and %s share server_name %q", n, prev, o.ServerName)
		}
		names[o.ServerName] = n
		routes = nil
		for _, r := range o.Routes {
			routes = append(routes, r.Hostname())
		}
		slices.Sort(routes)
		if !slices.Equal(routes, []string{"nats", "nats-2", "nats-3"}) {
			t.Errorf("%s routes to %v; want every node", n, routes)
		}
	}
	// provision-r3 raises every stream and bucket of streams/ to three replicas.
	s, _ := p.GetService("provision-r3")
	script := strings.Join(s.Command, " ")
	set := loadStreams(t)
	for _, st := range set.Streams {
		if !strings.Contains(script, " "+st.Name+" ") {
			t.Errorf("provision-r3 does not replicate stream %s", st.Name)
		}
	}
	for _, b := range set.Buckets {
		if !strings.Contains(script, "KV_"+b.Bucket) {
			t.Errorf("provision-r3 does not replicate bucket %s", b.Bucket)
		}
	}
	if !strings.Contains(script, "--replicas 3") || s.DependsOn["provision"].Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("provision-r3 must run after provision and set --replicas 3: %s", script)
	}
	for _, svc := range Services {
		s, _ := p.GetService(svc)
		if s.DependsOn["provision-r3"].Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s does not wait for provision-r3", svc)
		}
	}
}

func checkCompose(t *testing.T, p *types.Project) {
	t.Helper()
	cfgFile := path(t, "deploy", "compose", "gerritflow.yaml")
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		t.Fatalf("deploy/compose/gerritflow.yaml: %v", err)
	}
	raw, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}

	// Every image that is built has its context and Dockerfile.
	for _, s := range p.Services {
		if s.Build == nil {
			continue
		}
		df := s.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(s.Build.Context, df)
		}
		if st, err := os.Stat(s.Build.Context); err != nil || !st.IsDir() {
			t.Errorf("%s: build context %s: %v", s.Name, s.Build.Context, err)
		}
		if _, err := os.Stat(df); err != nil {
			t.Errorf("%s: Dockerfile: %v", s.Name, err)
		}
		if s.Build.Context != root(t) {
			t.Errorf("%s: build context %s; the Dockerfile needs the workspace root (go.work)", s.Name, s.Build.Context)
		}
	}

	// The config service writes one config per NATS user from deploy/compose/gerritflow.yaml.
	render, err := p.GetService("config")
	if err != nil {
		t.Fatal(err)
	}
	if src := mountSource(render, "/etc/gerritflow/gerritflow.yaml"); src != cfgFile {
		t.Errorf("config service reads %q; want %s", src, cfgFile)
	}
	script := strings.Join(render.Command, " ")
	if !strings.Contains(script, `sed -E "s#(nats|tls)://#\\1://$1:$2@#g"`) {
		t.Errorf("config service does not put the user into nats.url as deploy/k8s does:\n%s", script)
	}
	for _, u := range append(slices.Clone(Services), "gfctl-admin", "status-reader") {
		if !strings.Contains(script, fmt.Sprintf(`render %s "$%s"`, u, natsauth.PasswordEnv(u))) {
			t.Errorf("config service does not render the config of %s", u)
		}
		c := parseConfig(t, "config of "+u, []byte(renderNATSIdentity(string(raw), u, "0123abcd")))
		if !strings.HasPrefix(c.NATS.URL, "nats://"+u+":0123abcd@nats:4222") {
			t.Errorf("nats.url of %s = %q", u, c.NATS.URL)
		}
	}

	nats, err := p.GetService("nats")
	if err != nil {
		t.Fatal(err)
	}
	if o := natsConfigOf(t, p, "nats"); !o.JetStream {
		t.Error("nats: JetStream is not enabled")
	}
	if nats.HealthCheck == nil || !strings.Contains(strings.Join(nats.HealthCheck.Test, " "), "8222/healthz") {
		t.Error("nats: no /healthz healthcheck: services would start before JetStream is ready")
	}
	if want := "nats:" + natsServerVersion(t) + "-alpine"; nats.Image != want {
		t.Errorf("nats image %s; the tests run %s", nats.Image, want)
	}
	for u := range testPasswords(t) {
		if envValue(nats, natsauth.PasswordEnv(u)) == "" {
			t.Errorf("nats: %s is not passed to the server", natsauth.PasswordEnv(u))
		}
	}

	jaeger, err := p.GetService("jaeger")
	if err != nil {
		t.Fatal(err)
	}
	if !publishes(jaeger, 4317) || !strings.Contains(strings.Join(jaeger.Command, " "), "receivers.otlp.protocols.grpc.endpoint=0.0.0.0:4317") {
		t.Error("jaeger does not take OTLP gRPC on 4317")
	}
	if cfg.Otel.Endpoint != "http://jaeger:4317" || cfg.Otel.Protocol != "grpc" {
		t.Errorf("otel %+v; want grpc to http://jaeger:4317", cfg.Otel)
	}

	kinesis, err := p.GetService("kinesis")
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	if err := json.Unmarshal(read(t, "deploy", "local", "package-lock.json"), &lock); err != nil {
		t.Fatal(err)
	}
	if v := lock.Packages["node_modules/kinesis-local"].Version; !strings.HasSuffix(kinesis.Image, ":"+v) {
		t.Errorf("kinesis image %s; deploy/local runs kinesis-local %s", kinesis.Image, v)
	}
	stream, shards, _ := strings.Cut(envValue(kinesis, "INITIALIZE_STREAMS"), ":")
	if stream != cfg.Kinesis.Stream || cfg.Kinesis.Endpoint != "http://kinesis:"+envValue(kinesis, "KINESIS_MOCK_PLAIN_PORT") {
		t.Errorf("emulator creates %q on port %s; the config reads %q at %s", stream, envValue(kinesis, "KINESIS_MOCK_PLAIN_PORT"),
			cfg.Kinesis.Stream, cfg.Kinesis.Endpoint)
	}
	nShards, _ := strconv.Atoi(shards)

	provision, err := p.GetService("provision")
	if err != nil {
		t.Fatal(err)
	}
	if len(provision.Command) == 0 || provision.Command[0] != "provision" {
		t.Errorf("provision runs %v", provision.Command)
	}
	if provision.DependsOn["nats"].Condition != types.ServiceConditionHealthy ||
		provision.DependsOn["config"].Condition != types.ServiceConditionCompletedSuccessfully {
		t.Error("provision does not wait for a healthy NATS and the rendered configs")
	}
	checkConfigMount(t, provision, "gfctl-admin")

	for _, svc := range append(slices.Clone(Services), Viewers...) {
		s, err := p.GetService(svc)
		if err != nil {
			t.Errorf("no service %s", svc)
			continue
		}
		if s.Build == nil || s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != svc {
			t.Errorf("%s: not built with SERVICE=%s", svc, svc)
		}
		checkConfigMount(t, s, natsUser(svc))
		for dep, cond := range map[string]string{"provision": types.ServiceConditionCompletedSuccessfully, "nats": types.ServiceConditionHealthy} {
			if d, ok := s.DependsOn[dep]; !ok || d.Condition != cond || !d.Required {
				t.Errorf("%s: depends on %s with %+v; want %s", svc, dep, d, cond)
			}
		}
		host, port, err := net.SplitHostPort(cfg.Listen.For(svc))
		if err != nil {
			t.Fatal(err)
		}
		if host != "0.0.0.0" && host != "" {
			t.Errorf("listen.%s = %s: other containers cannot reach it", svc, cfg.Listen.For(svc))
		}
		if !slices.Contains(s.Expose, port) && !publishes(s, mustAtoi(t, port)) {
			t.Errorf("%s: listen port %s is neither exposed nor published (expose %v)", svc, port, s.Expose)
		}
		// Secrets: exactly the variables its part of the config names, all set.
		var got []string
		for k, v := range s.Environment {
			got = append(got, k)
			if v == nil || *v == "" {
				t.Errorf("%s: %s is empty", svc, k)
			}
		}
		want := secretEnvs(svc, cfg)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: environment %v; its config part names %v", svc, got, want)
		}
		if !s.ReadOnly || s.User == "" || strings.HasPrefix(s.User, "0") || strings.HasPrefix(s.User, "root") {
			t.Errorf("%s: read_only %v user %q; want a read-only root fs and a non-root user", svc, s.ReadOnly, s.User)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= cfg.Stages.DrainTimeout.D() {
			t.Errorf("%s: stop_grace_period %v does not exceed stages.drain_timeout %v", svc, s.StopGracePeriod, cfg.Stages.DrainTimeout.D())
		}
		if s.Deploy == nil || s.Deploy.Replicas == nil {
			t.Errorf("%s: no deploy.replicas", svc)
			continue
		}
		if svc == "bridge" && *s.Deploy.Replicas > nShards {
			t.Errorf("bridge: %d replicas for %d shards", *s.Deploy.Replicas, nShards)
		}
		if slices.Contains(Services, svc) && svc != "bridge" && *s.Deploy.Replicas < 2 {
			t.Errorf("%s: %d replica; the consuming stages run several to show they share one durable consumer", svc, *s.Deploy.Replicas)
		}
	}
}

// checkConfigMount checks that s runs with --config naming the file that the
// config service rendered for user, and sees no other user's file.
func checkConfigMount(t *testing.T, s types.ServiceConfig, user string) {
	t.Helper()
	cfgPath := ""
	for i, a := range s.Command {
		if a == "--config" && i+1 < len(s.Command) {
			cfgPath = s.Command[i+1]
		}
	}
	if cfgPath == "" {
		t.Errorf("%s: no --config in its command %v", s.Name, s.Command)
		return
	}
	for _, v := range s.Volumes {
		if v.Target == filepath.Dir(cfgPath) {
			if v.Type != types.VolumeTypeVolume || v.Source != "gerritflow-config" || v.Volume == nil || v.Volume.Subpath != user || !v.ReadOnly {
				t.Errorf("%s: %s is %+v; want volume gerritflow-config, subpath %s, read-only", s.Name, v.Target, v, user)
			}
			if filepath.Base(cfgPath) != "gerritflow.yaml" {
				t.Errorf("%s: --config %s; the config service writes <user>/gerritflow.yaml", s.Name, cfgPath)
			}
			return
		}
	}
	t.Errorf("%s: nothing mounted at %s (--config %s)", s.Name, filepath.Dir(cfgPath), cfgPath)
}

// natsConfigOf parses the server configuration service name runs, through
// its ./deploy/nats mount, as nats-server would.
func natsConfigOf(t *testing.T, p *types.Project, name string) *serverOptions {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Command) != 2 || s.Command[0] != "--config" {
		t.Fatalf("%s: command %v; want --config FILE", name, s.Command)
	}
	dir := mountSource(s, filepath.Dir(s.Command[1]))
	if dir != path(t, "deploy", "nats") {
		t.Fatalf("%s: %s comes from %q; want deploy/nats", name, filepath.Dir(s.Command[1]), dir)
	}
	testPasswords(t)
	if os.Getenv("NATS_SERVER_NAME") == "" {
		t.Setenv("NATS_SERVER_NAME", envValue(s, "NATS_SERVER_NAME"))
	}
	o, err := natsauth.Load(filepath.Join(dir, filepath.Base(s.Command[1])))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func mountSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	return ""
}

func envValue(s types.ServiceConfig, k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

func publishes(s types.ServiceConfig, port int) bool {
	for _, p := range s.Ports {
		if int(p.Target) == port {
			return true
		}
	}
	return false
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
