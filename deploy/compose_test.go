package deploy

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/url"
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
	if _, err := p.GetService("sims"); err == nil {
		t.Error("the simulators run without the sims profile")
	}
	if got := argAfter(mustService(t, p, "provision").Command, "--replicas"); got != "1" {
		t.Errorf("provision --replicas %q without the cluster profile; want 1 (streams/ as written)", got)
	}
	o := natsConfigOf(t, p, "nats")
	if o.Cluster.Port != 0 {
		t.Error("the default nats service is configured as a cluster node")
	}
}

func TestComposeCluster(t *testing.T) {
	p := loadCompose(t, composeEnv(t, "GERRITFLOW_NATS_CONFIG=nats-cluster.conf", "GERRITFLOW_STREAM_REPLICAS=3"), "cluster")
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
	// provision creates every stream and bucket with three replicas, once
	// all three nodes are up.
	provision := mustService(t, p, "provision")
	if got := argAfter(provision.Command, "--replicas"); got != "3" {
		t.Errorf("provision --replicas %q in the cluster profile; want 3 (command %v)", got, provision.Command)
	}
	for _, n := range []string{"nats-2", "nats-3"} {
		if provision.DependsOn[n].Condition != types.ServiceConditionHealthy {
			t.Errorf("provision does not wait for %s: R3 streams need every node", n)
		}
	}
}

func TestComposeSims(t *testing.T) {
	p := loadCompose(t, composeEnv(t), "sims")
	checkCompose(t, p)
	cfg, err := config.LoadFile(path(t, "deploy", "compose", "gerritflow.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sims := mustService(t, p, "sims")
	if len(sims.Profiles) != 1 || sims.Profiles[0] != "sims" {
		t.Errorf("sims profiles %v; want [sims] only", sims.Profiles)
	}
	if sims.Build == nil || sims.Build.Args["SERVICE"] == nil || *sims.Build.Args["SERVICE"] != "gfdev" {
		t.Error("sims is not built with SERVICE=gfdev")
	}
	if len(sims.Command) < 1 || sims.Command[0] != "sim" {
		t.Errorf("sims runs %v; want gfdev sim", sims.Command)
	}
	checkConfigMount(t, sims)
	// The services find the simulators where the config says: the Docker
	// host's ports, published by the sims service.
	for key, raw := range map[string]string{"jenkins.url": cfg.Jenkins.URL, "gerrit.url": cfg.Gerrit.URL, "--jenkins-listen": "http://" + argAfter(sims.Command, "--jenkins-listen"), "--gerrit-listen": "http://" + argAfter(sims.Command, "--gerrit-listen")} {
		u, err := url.Parse(raw)
		if err != nil || u.Port() == "" {
			t.Errorf("%s %q: no port", key, raw)
			continue
		}
		if !publishes(sims, mustAtoi(t, u.Port())) {
			t.Errorf("%s port %s is not published by sims (ports %v)", key, u.Port(), sims.Ports)
		}
		if strings.HasPrefix(key, "--") && u.Hostname() != "0.0.0.0" {
			t.Errorf("sims %s %s: other containers and the host cannot reach it", key, u.Host)
		}
	}
	if !strings.Contains(cfg.Jenkins.URL, "host.docker.internal") || !strings.Contains(cfg.Gerrit.URL, "host.docker.internal") {
		t.Errorf("jenkins.url %s, gerrit.url %s: the services reach the published ports through host.docker.internal", cfg.Jenkins.URL, cfg.Gerrit.URL)
	}
	// It accepts the credentials the services present, and writes Gerrit's
	// events where the bridge reads them.
	for _, k := range []string{cfg.Jenkins.TokenEnv, cfg.Gerrit.PasswordEnv, cfg.Kinesis.AccessKeyEnv, cfg.Kinesis.SecretKeyEnv} {
		if envValue(sims, k) == "" {
			t.Errorf("sims: $%s is not set (the config names it)", k)
		}
	}
	for _, svc := range []string{"trigger", "monitor"} {
		if envValue(mustService(t, p, svc), cfg.Jenkins.TokenEnv) != envValue(sims, cfg.Jenkins.TokenEnv) {
			t.Errorf("%s and the Jenkins simulator disagree on $%s", svc, cfg.Jenkins.TokenEnv)
		}
	}
	if envValue(mustService(t, p, "voter"), cfg.Gerrit.PasswordEnv) != envValue(sims, cfg.Gerrit.PasswordEnv) {
		t.Errorf("the voter and the Gerrit simulator disagree on $%s", cfg.Gerrit.PasswordEnv)
	}
	if sims.DependsOn["kinesis"].Condition == "" {
		t.Error("sims does not wait for the Kinesis emulator")
	}
	for k, v := range sims.Environment {
		if strings.HasSuffix(k, "NATS_PASSWORD") || v != nil && slices.Contains(slices.Collect(maps.Values(testPasswords(t))), *v) {
			t.Errorf("sims gets a NATS password (%s): it has no business with NATS", k)
		}
	}
	if !sims.ReadOnly || sims.User == "" || strings.HasPrefix(sims.User, "0") {
		t.Errorf("sims: read_only %v user %q; want a read-only root fs and a non-root user", sims.ReadOnly, sims.User)
	}
}

func mustService(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// argAfter is the argument following flag in args ("" if none).
func argAfter(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func checkCompose(t *testing.T, p *types.Project) {
	t.Helper()
	cfgFile := path(t, "deploy", "compose", "gerritflow.yaml")
	cfg, err := config.LoadFile(cfgFile)
	if err != nil {
		t.Fatalf("deploy/compose/gerritflow.yaml: %v", err)
	}
	if cfg.NATS.UserEnv == "" || cfg.NATS.PasswordEnv == "" {
		t.Errorf("nats %+v: the shared config must name user_env and password_env (each service sets its own)", cfg.NATS)
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
	if provision.DependsOn["nats"].Condition != types.ServiceConditionHealthy {
		t.Error("provision does not wait for a healthy NATS")
	}
	checkConfigMount(t, provision)
	checkNATSIdentity(t, provision, "gfctl-admin", cfg)

	for _, svc := range append(slices.Clone(Services), Viewers...) {
		s, err := p.GetService(svc)
		if err != nil {
			t.Errorf("no service %s", svc)
			continue
		}
		if s.Build == nil || s.Build.Args["SERVICE"] == nil || *s.Build.Args["SERVICE"] != svc {
			t.Errorf("%s: not built with SERVICE=%s", svc, svc)
		}
		checkConfigMount(t, s)
		checkNATSIdentity(t, s, natsUser(svc), cfg)
		if hc := s.HealthCheck; hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || !slices.Contains(hc.Test, "healthcheck") ||
			argAfter(hc.Test, "--config") != argAfter(s.Command, "--config") {
			t.Errorf("%s: healthcheck %+v; want the image's own `healthcheck --config` on the config it runs with", svc, hc)
		}
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
		// Secrets: exactly the variables its part of the config names, all
		// set, and its NATS identity.
		var got []string
		for k, v := range s.Environment {
			got = append(got, k)
			if v == nil || *v == "" {
				t.Errorf("%s: %s is empty", svc, k)
			}
		}
		want := append(secretEnvs(svc, cfg), cfg.NATS.UserEnv, cfg.NATS.PasswordEnv)
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

// checkConfigMount checks that s runs with --config naming
// deploy/compose/gerritflow.yaml, mounted read-only: the one file every
// service shares.
func checkConfigMount(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	cfgPath := argAfter(s.Command, "--config")
	if cfgPath == "" {
		t.Errorf("%s: no --config in its command %v", s.Name, s.Command)
		return
	}
	for _, v := range s.Volumes {
		if v.Target == cfgPath {
			if v.Type != types.VolumeTypeBind || v.Source != path(t, "deploy", "compose", "gerritflow.yaml") || !v.ReadOnly {
				t.Errorf("%s: %s is %+v; want deploy/compose/gerritflow.yaml, read-only", s.Name, v.Target, v)
			}
			return
		}
	}
	t.Errorf("%s: nothing mounted at %s", s.Name, cfgPath)
}

// checkNATSIdentity checks that s logs in to NATS as user with user's own
// password, as pkg/config reads them (nats.user_env, nats.password_env), and
// that no other user's password is in its environment.
func checkNATSIdentity(t *testing.T, s types.ServiceConfig, user string, cfg *config.Config) {
	t.Helper()
	pw := testPasswords(t)
	getenv := func(k string) string { return envValue(s, k) }
	gotUser, gotPW, err := cfg.NATS.UserPassword(getenv)
	if err != nil || gotUser != user || gotPW.Reveal() != pw[user] {
		t.Errorf("%s logs in to NATS as %q with %s's password: %v; want %s with its own", s.Name, gotUser, whose(pw, gotPW.Reveal()), err, user)
	}
	if inbox, err := cfg.NATS.Inbox(gotUser, getenv); err != nil || inbox != "_INBOX_"+user {
		t.Errorf("%s: inbox prefix %q (%v); want _INBOX_%s, the one permissions.conf allows", s.Name, inbox, err, user)
	}
	for k, v := range s.Environment {
		if v == nil {
			continue
		}
		if other := whose(pw, *v); other != "" && other != user {
			t.Errorf("%s: $%s holds %s's NATS password", s.Name, k, other)
		}
	}
}

// whose names the user a password belongs to ("" for none).
func whose(pw map[string]string, password string) string {
	for u, p := range pw {
		if p == password {
			return u
		}
	}
	return ""
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
