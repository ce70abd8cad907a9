package deploy

import (
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gerritflow/gerritflow/deploy/natsauth"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/streams"
)

// ScaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, the part gerritflow
// writes, mirrored from github.com/kedacore/keda/v2 apis/keda/v1alpha1
// (v2.21; importing KEDA would pull controller-runtime and client-go into
// the workspace's build list). Strict decoding rejects any other field.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		ScaleTargetRef *struct {
			Name       string `json:"name"`
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *struct {
					ScaleDown *struct {
						StabilizationWindowSeconds *int32 `json:"stabilizationWindowSeconds,omitempty"`
						Policies                   []struct {
							Type          string `json:"type"`
							Value         int32  `json:"value"`
							PeriodSeconds int32  `json:"periodSeconds"`
						} `json:"policies,omitempty"`
					} `json:"scaleDown,omitempty"`
				} `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name,omitempty"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// natsJetStreamMetadata are the keys KEDA's nats-jetstream scaler reads
// (pkg/scalers/nats_jetstream_scaler.go, v2.21).
var natsJetStreamMetadata = []string{"natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer",
	"lagThreshold", "activationLagThreshold", "useHttps"}

// manifests is one kustomization, rendered and decoded into typed objects.
type manifests struct {
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	configMaps      map[string]corev1.ConfigMap
	deployments     map[string]appsv1.Deployment
	jobs            map[string]batchv1.Job
	services        map[string]corev1.Service
	pdbs            []policyv1.PodDisruptionBudget
	scaledObjects   map[string]ScaledObject
	nackStreams     []NACKStream
	nackConsumers   []NACKConsumer
	nackKV          []NACKKeyValue
}

// render builds a kustomization as `kubectl apply -k` would (kustomize's
// own library) and decodes every resource strictly into its Go type.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), path(t, "deploy", "k8s", dir))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/%s: %v", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{configMaps: map[string]corev1.ConfigMap{}, deployments: map[string]appsv1.Deployment{},
		jobs: map[string]batchv1.Job{}, services: map[string]corev1.Service{}, scaledObjects: map[string]ScaledObject{}}
	for _, doc := range splitYAML(out) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		strict := func(v any) {
			t.Helper()
			if err := yaml.UnmarshalStrict(doc, v); err != nil {
				t.Fatalf("deploy/k8s/%s: %s: %v\n%s", dir, tm.Kind, err, doc)
			}
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 Namespace":
			var o corev1.Namespace
			strict(&o)
			m.namespaces = append(m.namespaces, o)
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			strict(&o)
			m.serviceAccounts = append(m.serviceAccounts, o)
		case "v1 ConfigMap":
			var o corev1.ConfigMap
			strict(&o)
			m.configMaps[o.Name] = o
		case "v1 Service":
			var o corev1.Service
			strict(&o)
			m.services[o.Name] = o
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			strict(&o)
			m.deployments[o.Name] = o
		case "batch/v1 Job":
			var o batchv1.Job
			strict(&o)
			m.jobs[o.Name] = o
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			strict(&o)
			m.pdbs = append(m.pdbs, o)
		case "keda.sh/v1alpha1 ScaledObject":
			var o ScaledObject
			strict(&o)
			m.scaledObjects[o.Name] = o
		case NACKAPIVersion + " Stream":
			var o NACKStream
			strict(&o)
			m.nackStreams = append(m.nackStreams, o)
		case NACKAPIVersion + " Consumer":
			var o NACKConsumer
			strict(&o)
			m.nackConsumers = append(m.nackConsumers, o)
		case NACKAPIVersion + " KeyValue":
			var o NACKKeyValue
			strict(&o)
			m.nackKV = append(m.nackKV, o)
		default:
			t.Fatalf("deploy/k8s/%s: unexpected %s %s (add its type to this test)", dir, tm.APIVersion, tm.Kind)
		}
	}
	return m
}

// perReplica is how many messages one replica of a stage holds un-acked at
// most: stages.concurrency for the synchronous stages; the monitor follows
// up to stage.Spec.MaxPending builds (services/monitor/internal/monitor).
func perReplica(svc string, c *config.Config) int {
	if svc == "monitor" {
		return 10000
	}
	return c.Stages.Concurrency
}

// secretEnvs are the environment variables a service reads secrets from,
// as its part of the config names them.
func secretEnvs(svc string, c *config.Config) []string {
	var env []string
	switch svc {
	case "bridge":
		for _, e := range []string{c.Kinesis.AccessKeyEnv, c.Kinesis.SecretKeyEnv} {
			if e != "" {
				env = append(env, e)
			}
		}
	case "trigger", "monitor":
		env = append(env, c.Jenkins.TokenEnv)
	case "voter":
		env = append(env, c.Gerrit.PasswordEnv)
	}
	return env
}

func TestKubernetesBase(t *testing.T) {
	m := render(t, "base")
	checkKubernetes(t, m)
	if _, ok := m.jobs["gerritflow-provision"]; !ok {
		t.Error("the base has no provisioning Job")
	}
	if len(m.nackStreams)+len(m.nackConsumers)+len(m.nackKV) > 0 {
		t.Error("the base holds NACK resources: with the provisioning Job, two owners of the streams")
	}
}

func TestKubernetesCluster(t *testing.T) {
	m := render(t, "overlays/cluster")
	checkKubernetes(t, m)
	if len(m.jobs) > 0 {
		t.Errorf("the cluster overlay keeps Jobs %v: gfctl provision would set the R3 streams back to R1", slices.Collect(mapKeys(m.jobs)))
	}
	set := loadStreams(t)
	var names []string
	for _, s := range m.nackStreams {
		names = append(names, s.Spec.Name)
		if s.Spec.Replicas != 3 {
			t.Errorf("stream %s has %d replicas; want 3", s.Spec.Name, s.Spec.Replicas)
		}
	}
	for _, s := range set.Streams {
		if !slices.Contains(names, s.Name) {
			t.Errorf("stream %s of streams/ has no NACK Stream", s.Name)
		}
	}
	var consumers []string
	for _, c := range m.nackConsumers {
		consumers = append(consumers, c.Spec.StreamName+"."+c.Spec.DurableName)
	}
	for _, c := range set.Consumers {
		if !slices.Contains(consumers, c.Stream+"."+c.Config.Durable) {
			t.Errorf("consumer %s on %s has no NACK Consumer", c.Config.Durable, c.Stream)
		}
	}
	var buckets []string
	for _, b := range m.nackKV {
		buckets = append(buckets, b.Spec.Bucket)
		if b.Spec.Replicas != 3 {
			t.Errorf("bucket %s has %d replicas; want 3", b.Spec.Bucket, b.Spec.Replicas)
		}
	}
	for _, b := range set.Buckets {
		if !slices.Contains(buckets, b.Bucket) {
			t.Errorf("bucket %s has no NACK KeyValue", b.Bucket)
		}
	}
	if len(names) != len(set.Streams) || len(consumers) != len(set.Consumers) || len(buckets) != len(set.Buckets) {
		t.Errorf("NACK resources %d/%d/%d; streams/ defines %d/%d/%d", len(names), len(consumers), len(buckets),
			len(set.Streams), len(set.Consumers), len(set.Buckets))
	}
	if d := m.deployments["bridge"]; d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("the cluster overlay runs one bridge: no replica takes over its shards")
	}
	for name, so := range m.scaledObjects {
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 2 {
			t.Errorf("ScaledObject %s: minReplicaCount below 2 in the cluster overlay", name)
		}
	}
}

// TestKubernetesDemo checks the demo overlay: the base plus the Kinesis
// emulator and the simulators, each address of the config reaching the
// container that serves it, the simulators accepting the credentials the
// services present, and a config that is the base's but for those addresses.
func TestKubernetesDemo(t *testing.T) {
	m := render(t, "overlays/demo")
	checkKubernetes(t, m)
	cfg := parseConfig(t, "demo ConfigMap", []byte(m.configMaps["gerritflow-config"].Data["gerritflow.yaml"]))
	base := render(t, "base")
	baseCfg := parseConfig(t, "base ConfigMap", []byte(base.configMaps["gerritflow-config"].Data["gerritflow.yaml"]))
	// Nothing differs from the base's config but what points at the demo.
	demoOnly := func(c config.Config) config.Config {
		c.Kinesis.Endpoint, c.Kinesis.AccessKeyEnv, c.Kinesis.SecretKeyEnv, c.Kinesis.Start = "", "", "", ""
		c.Jenkins.URL, c.Gerrit.URL, c.Status.GerritWebURL = "", "", ""
		return c
	}
	if a, b := demoOnly(*cfg), demoOnly(*baseCfg); !reflect.DeepEqual(a, b) {
		t.Errorf("the demo config differs from the base's beyond the demo's addresses:\ndemo %+v\nbase %+v", a, b)
	}
	if cfg.Kinesis.AccessKeyEnv == "" || cfg.Kinesis.SecretKeyEnv == "" {
		t.Error("the demo config names no AWS keys: the bridge would look for AWS credentials in the pod")
	}

	sims, kinesis := m.deployments["sims"], m.deployments["kinesis"]
	checkHardened(t, "Deployment sims", "sims", sims.Spec.Template.Spec)
	checkHardened(t, "Deployment kinesis", "kinesis", kinesis.Spec.Template.Spec)
	checkPodConfig(t, "Deployment sims", sims.Spec.Template.Spec)
	sc := sims.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(sc.Image, "gerritflow/gfdev:") || len(sc.Args) == 0 || sc.Args[0] != "sim" {
		t.Errorf("sims runs %s %v; want gerritflow/gfdev:<tag> sim", sc.Image, sc.Args)
	}
	kc := kinesis.Spec.Template.Spec.Containers[0]
	if want := mustService(t, loadCompose(t, composeEnv(t)), "kinesis").Image; kc.Image != want {
		t.Errorf("kinesis image %s; docker-compose.yml runs %s", kc.Image, want)
	}
	kenv := map[string]string{}
	for _, e := range kc.Env {
		kenv[e.Name] = e.Value
	}
	if stream, _, _ := strings.Cut(kenv["INITIALIZE_STREAMS"], ":"); stream != cfg.Kinesis.Stream {
		t.Errorf("the emulator creates %q; kinesis.stream is %s", kenv["INITIALIZE_STREAMS"], cfg.Kinesis.Stream)
	}

	// Each address of the config is a Service port whose pods serve it.
	for _, a := range []struct {
		key, url string
		d        appsv1.Deployment
		served   string // the container's own idea of its port
	}{
		{"jenkins.url", cfg.Jenkins.URL, sims, argPort(t, sc.Args, "--jenkins-listen")},
		{"gerrit.url", cfg.Gerrit.URL, sims, argPort(t, sc.Args, "--gerrit-listen")},
		{"kinesis.endpoint", cfg.Kinesis.Endpoint, kinesis, kenv["KINESIS_MOCK_PLAIN_PORT"]},
	} {
		u, err := url.Parse(a.url)
		if err != nil {
			t.Fatalf("%s %q: %v", a.key, a.url, err)
		}
		host, _, _ := strings.Cut(u.Hostname(), ".") // a Service's short name, or <name>.gerritflow.svc...
		svc, ok := m.services[host]
		if !ok || !selectsMap(svc.Spec.Selector, a.d.Spec.Template.Labels) {
			t.Errorf("%s %s: no Service %s selecting Deployment %s's pods", a.key, a.url, host, a.d.Name)
			continue
		}
		target := ""
		for _, p := range svc.Spec.Ports {
			if strconv.Itoa(int(p.Port)) == u.Port() {
				target = resolvePort(a.d.Spec.Template.Spec.Containers[0], p.TargetPort)
			}
		}
		if target == "" || target != a.served {
			t.Errorf("%s %s: Service %s sends port %s to container port %q; the container serves %s", a.key, a.url, host, u.Port(), target, a.served)
		}
	}

	// The simulators accept exactly what the services present: the same
	// Secret keys, and no NATS password (they do not use NATS).
	secretOf := func(d appsv1.Deployment, name string) string {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == name && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				return e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			}
		}
		return ""
	}
	for _, c := range []struct{ env, svc string }{
		{cfg.Jenkins.TokenEnv, "trigger"}, {cfg.Jenkins.TokenEnv, "monitor"}, {cfg.Gerrit.PasswordEnv, "voter"},
		{cfg.Kinesis.AccessKeyEnv, "bridge"}, {cfg.Kinesis.SecretKeyEnv, "bridge"},
	} {
		if got, want := secretOf(sims, c.env), secretOf(m.deployments[c.svc], c.env); got == "" || got != want {
			t.Errorf("sims takes $%s from %q; %s from %q", c.env, got, c.svc, want)
		}
	}
	for _, e := range sc.Env {
		if strings.Contains(e.Name, "NATS") {
			t.Errorf("sims gets %s: it has no business with NATS", e.Name)
		}
	}
	if sims.Spec.Replicas == nil || *sims.Spec.Replicas != 1 || sims.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("sims: want one replica, recreated (the simulators' state is in memory)")
	}
}

// argPort is the port of the host:port after flag in args.
func argPort(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no %s in %v", flag, args)
	}
	_, port, err := net.SplitHostPort(args[i+1])
	if err != nil {
		t.Fatalf("%s %s: %v", flag, args[i+1], err)
	}
	return port
}

func checkKubernetes(t *testing.T, m *manifests) {
	set := loadStreams(t)
	cm, ok := m.configMaps["gerritflow-config"]
	if !ok {
		t.Fatal("no ConfigMap gerritflow-config")
	}
	raw := cm.Data["gerritflow.yaml"]
	cfg := parseConfig(t, "ConfigMap gerritflow-config", []byte(raw))
	if cfg.NATS.UserEnv != "NATS_USER" || cfg.NATS.PasswordEnv != "NATS_PASSWORD" {
		t.Errorf("ConfigMap nats %+v: want user_env NATS_USER and password_env NATS_PASSWORD (each pod sets its own)", cfg.NATS)
	}
	if strings.Contains(raw, "@") && strings.Contains(cfg.NATS.URL, "@") {
		t.Error("the ConfigMap's nats.url holds credentials")
	}

	for _, svc := range append(slices.Clone(Services), Viewers...) {
		d, ok := m.deployments[svc]
		if !ok {
			t.Errorf("no Deployment %s", svc)
			continue
		}
		checkPod(t, "Deployment "+svc, svc, d.Spec.Template.Spec, cfg, natsUser(svc))
		_, port, err := net.SplitHostPort(cfg.Listen.For(svc))
		if err != nil {
			t.Fatal(err)
		}
		c := d.Spec.Template.Spec.Containers[0]
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: no HTTP %s probe", svc, p.name)
				continue
			}
			if got := resolvePort(c, p.probe.HTTPGet.Port); p.probe.HTTPGet.Path != p.path || got != port {
				t.Errorf("%s: %s probe GET %s on port %s; want %s on %s (listen.%s)", svc, p.name, p.probe.HTTPGet.Path, got, p.path, port, svc)
			}
		}
		drain := cfg.Stages.DrainTimeout.Or(25 * time.Second)
		if svc == "bridge" {
			drain = 35 * time.Second // its publish drain (20s) + 15s to release leases
		}
		if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain {
			t.Errorf("%s: terminationGracePeriodSeconds %s does not exceed the drain (%v)", svc, fmtSeconds(g), drain)
		}
		if d.Spec.Selector == nil || !selects(d.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("%s: the selector does not match the pod labels", svc)
		}
		pdbs := 0
		for _, p := range m.pdbs {
			if selects(p.Spec.Selector, d.Spec.Template.Labels) {
				pdbs++
				if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() != 1 {
					t.Errorf("PodDisruptionBudget %s: maxUnavailable %v; want 1 (a minAvailable would block node drains of single-replica stages)", p.Name, p.Spec.MaxUnavailable)
				}
			}
		}
		if pdbs != 1 {
			t.Errorf("%s: %d PodDisruptionBudgets select its pods; want 1", svc, pdbs)
		}
		if s, ok := m.services[svc]; !ok || !selectsMap(s.Spec.Selector, d.Spec.Template.Labels) ||
			len(s.Spec.Ports) != 1 || resolvePort(c, s.Spec.Ports[0].TargetPort) != port {
			t.Errorf("%s: no Service reaching its port %s", svc, port)
		}

		so, scaled := m.scaledObjects[svc]
		if svc == "bridge" || slices.Contains(Viewers, svc) {
			if scaled {
				t.Errorf("%s is autoscaled on lag: it consumes nothing (the bridge: replicas beyond the shard count only wait for leases)", svc)
			}
			if d.Spec.Replicas == nil {
				t.Errorf("%s has no replica count", svc)
			}
			continue
		}
		if !scaled {
			t.Errorf("%s: no ScaledObject", svc)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("%s: spec.replicas is set while KEDA scales it (every apply would reset it)", svc)
		}
		checkScaledObject(t, svc, so, set, cfg)
	}
	if len(m.scaledObjects) != 4 {
		t.Errorf("%d ScaledObjects; want one per consuming stage", len(m.scaledObjects))
	}
	if j, ok := m.jobs["gerritflow-provision"]; ok {
		checkPod(t, "Job gerritflow-provision", "gfctl", j.Spec.Template.Spec, cfg, "gfctl-admin")
		if args := j.Spec.Template.Spec.Containers[0].Args; len(args) == 0 || args[0] != "provision" {
			t.Errorf("provisioning Job runs %v", args)
		}
	}
	for _, sa := range m.serviceAccounts {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s mounts an API token the services never use", sa.Name)
		}
	}
}

// checkPod checks a pod template: non-root, read-only, limited, with its
// NATS identity from env (nats.user_env, nats.password_env) and its secrets
// from env.
func checkPod(t *testing.T, what, container string, p corev1.PodSpec, cfg *config.Config, natsUser string) {
	t.Helper()
	checkHardened(t, what, container, p)
	main := p.Containers[0]
	if !strings.HasPrefix(main.Image, "gerritflow/"+container+":") {
		t.Errorf("%s: image %s; want gerritflow/%s:<tag>", what, main.Image, container)
	}
	checkPodConfig(t, what, p)
	// The NATS identity: NATS_USER literal, NATS_PASSWORD from the pod's own
	// key of Secret gerritflow-nats; pkg/config reads them as it will in the pod.
	env := map[string]corev1.EnvVar{}
	for _, e := range main.Env {
		env[e.Name] = e
	}
	if r := env["NATS_PASSWORD"].ValueFrom; r == nil || r.SecretKeyRef == nil || r.SecretKeyRef.Name != "gerritflow-nats" || r.SecretKeyRef.Key != natsUser {
		t.Errorf("%s: NATS_PASSWORD not from Secret gerritflow-nats key %s", what, natsUser)
	}
	getenv := func(k string) string {
		e := env[k]
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
		return e.Value
	}
	user, pw, err := cfg.NATS.UserPassword(getenv)
	if err != nil || user != natsUser || pw.Reveal() != "secret:gerritflow-nats/"+natsUser {
		t.Errorf("%s: logs in to NATS as %q with %q (%v); want %s with its own Secret key", what, user, pw.Reveal(), err, natsUser)
	}
	if inbox, err := cfg.NATS.Inbox(user, getenv); err != nil || inbox != "_INBOX_"+natsUser {
		t.Errorf("%s: inbox prefix %q (%v); want _INBOX_%s, the one permissions.conf allows", what, inbox, err, natsUser)
	}
	// Secrets: exactly the *_env variables its part of the config names.
	var got []string
	for _, e := range main.Env {
		if e.Name == cfg.NATS.UserEnv || e.Name == cfg.NATS.PasswordEnv {
			continue
		}
		got = append(got, e.Name)
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "gerritflow-secrets" {
			t.Errorf("%s: env %s is not from Secret gerritflow-secrets", what, e.Name)
		}
	}
	want := secretEnvs(container, cfg)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: secret env %v; the config names %v", what, got, want)
	}
}

// checkHardened checks what the restricted Pod Security Standard and the
// deployment's own rules ask of a pod: one container named container, non-root,
// read-only, without privileges, with requests and limits, no API token.
func checkHardened(t *testing.T, what, container string, p corev1.PodSpec) {
	t.Helper()
	if p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot ||
		p.SecurityContext.RunAsUser == nil || *p.SecurityContext.RunAsUser == 0 {
		t.Errorf("%s: the pod may run as root", what)
	}
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a service account token", what)
	}
	if len(p.Containers) != 1 || p.Containers[0].Name != container {
		t.Fatalf("%s: containers %v; want one named %s", what, p.Containers, container)
	}
	for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || (sc.RunAsUser != nil && *sc.RunAsUser == 0) {
			t.Errorf("%s: container %s is not non-root, read-only, without privileges", what, c.Name)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("%s: container %s has no %s request", what, c.Name, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("%s: container %s has no %s limit", what, c.Name, r)
			}
		}
	}
}

// checkPodConfig checks that --config names gerritflow.yaml of the ConfigMap
// gerritflow-config, mounted read-only, and that no init container rewrites it.
func checkPodConfig(t *testing.T, what string, p corev1.PodSpec) {
	t.Helper()
	main := p.Containers[0]
	if len(p.InitContainers) != 0 {
		t.Errorf("%s: init containers %v; the shared config needs none", what, p.InitContainers)
	}
	cfgPath := ""
	for i, a := range main.Args {
		if a == "--config" && i+1 < len(main.Args) {
			cfgPath = main.Args[i+1]
		}
	}
	vol := map[string]corev1.Volume{}
	for _, v := range p.Volumes {
		vol[v.Name] = v
	}
	mounted := false
	for _, m := range main.VolumeMounts {
		if m.MountPath == filepath.Dir(cfgPath) {
			v := vol[m.Name]
			mounted = v.ConfigMap != nil && v.ConfigMap.Name == "gerritflow-config" && m.ReadOnly && filepath.Base(cfgPath) == "gerritflow.yaml"
		}
	}
	if !mounted {
		t.Errorf("%s: --config %q is not gerritflow.yaml of ConfigMap gerritflow-config, mounted read-only", what, cfgPath)
	}
}

func checkScaledObject(t *testing.T, svc string, so ScaledObject, set *streams.Set, cfg *config.Config) {
	t.Helper()
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name != svc {
		t.Errorf("ScaledObject %s does not scale Deployment %s", so.Name, svc)
	}
	// One nats-jetstream trigger per durable consumer of the service
	// (streams/consumers: <durable> is the service, or <service>-<role>).
	var want []string
	for _, c := range set.Consumers {
		if c.Config.Durable == svc || strings.HasPrefix(c.Config.Durable, svc+"-") {
			want = append(want, c.Stream+"."+c.Config.Durable)
		}
	}
	var got []string
	for _, tr := range so.Spec.Triggers {
		md := tr.Metadata
		if tr.Type != "nats-jetstream" {
			t.Errorf("ScaledObject %s: trigger %s; want nats-jetstream", svc, tr.Type)
			continue
		}
		for k := range md {
			if !slices.Contains(natsJetStreamMetadata, k) {
				t.Errorf("ScaledObject %s: metadata %q is not a nats-jetstream scaler key", svc, k)
			}
		}
		got = append(got, md["stream"]+"."+md["consumer"])
		if md["account"] != natsauth.Account {
			t.Errorf("ScaledObject %s: account %q; want %s", svc, md["account"], natsauth.Account)
		}
		if host, port, err := net.SplitHostPort(md["natsServerMonitoringEndpoint"]); err != nil || port != "8222" || !strings.HasPrefix(host, "nats-headless.") {
			t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q; want the chart's headless Service on 8222", svc, md["natsServerMonitoringEndpoint"])
		}
		if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
			t.Errorf("ScaledObject %s: lagThreshold %q", svc, md["lagThreshold"])
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("ScaledObject %s scales on %v; streams/ gives it the consumers %v", svc, got, want)
	}
	mx := so.Spec.MaxReplicaCount
	if mx == nil || so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 || *mx < *so.Spec.MinReplicaCount {
		t.Fatalf("ScaledObject %s: replica bounds %v..%v", svc, so.Spec.MinReplicaCount, mx)
	}
	for _, name := range want {
		stream, durable, _ := strings.Cut(name, ".")
		c, _ := set.ConsumerFor(durable)
		if held := int(*mx) * perReplica(svc, cfg); c.Stream != stream || held > c.Config.MaxAckPending {
			t.Errorf("ScaledObject %s: %d replicas x %d in flight = %d exceeds max_ack_pending %d of %s: the extra replicas would get nothing",
				svc, *mx, perReplica(svc, cfg), held, c.Config.MaxAckPending, name)
		}
	}
}

func resolvePort(c corev1.Container, p intstr.IntOrString) string {
	if p.Type == intstr.Int {
		return strconv.Itoa(p.IntValue())
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	return "unresolved " + p.StrVal
}

func selects(s *metav1.LabelSelector, labels map[string]string) bool {
	return s != nil && len(s.MatchExpressions) == 0 && selectsMap(s.MatchLabels, labels)
}

func selectsMap(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// natsServerVersion is the nats-server the tests embed (the workspace's
// build list): the deployment runs the same version.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list nats-server: %v", err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
}

// TestNATSHelmValues checks deploy/k8s/nats-values.yaml against what the
// manifests and deploy/nats rely on.
func TestNATSHelmValues(t *testing.T) {
	type env struct {
		ValueFrom struct {
			SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
		} `json:"valueFrom"`
	}
	type patch struct {
		Op    string         `json:"op"`
		Path  string         `json:"path"`
		Value map[string]any `json:"value"`
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool   `json:"enabled"`
					Dir     string `json:"dir"`
					PVC     struct {
						Enabled bool   `json:"enabled"`
						Size    string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
				MemoryStore struct {
					Enabled bool `json:"enabled"`
				} `json:"memoryStore"`
			} `json:"jetstream"`
			Monitor struct {
				Enabled bool `json:"enabled"`
				Port    int  `json:"port"`
			} `json:"monitor"`
			Merge map[string]string `json:"merge"`
		} `json:"config"`
		Container struct {
			Image struct {
				Tag string `json:"tag"`
			} `json:"image"`
			Env   map[string]env `json:"env"`
			Patch []patch        `json:"patch"`
		} `json:"container"`
		PodTemplate struct {
			Patch                     []patch                   `json:"patch"`
			TopologySpreadConstraints map[string]map[string]any `json:"topologySpreadConstraints"`
		} `json:"podTemplate"`
		PodDisruptionBudget struct {
			Enabled bool `json:"enabled"`
		} `json:"podDisruptionBudget"`
	}
	if err := yaml.UnmarshalStrict(read(t, "deploy", "k8s", "nats-values.yaml"), &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster enabled %v with %d replicas; want 3", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.FileStore.PVC.Size == "" {
		t.Errorf("JetStream %+v; want a file store on a PVC", c.JetStream)
	}
	if !c.Monitor.Enabled || c.Monitor.Port != 8222 {
		t.Errorf("monitoring %+v; KEDA reads /jsz on 8222", c.Monitor)
	}
	if want := natsServerVersion(t) + "-alpine"; v.Container.Image.Tag != want {
		t.Errorf("nats image %s; the tests run nats-server %s", v.Container.Image.Tag, want)
	}
	// accounts.conf is mounted from ConfigMap gerritflow-nats-auth and included.
	var mountPath, volume string
	for _, p := range v.Container.Patch {
		if p.Path == "/volumeMounts/-" {
			mountPath, _ = p.Value["mountPath"].(string)
			volume, _ = p.Value["name"].(string)
		}
	}
	configMap := ""
	for _, p := range v.PodTemplate.Patch {
		if p.Path == "/spec/volumes/-" && p.Value["name"] == volume {
			if cm, ok := p.Value["configMap"].(map[string]any); ok {
				configMap, _ = cm["name"].(string)
			}
		}
	}
	if !strings.HasPrefix(mountPath, "/etc/nats-config/") || configMap != "gerritflow-nats-auth" {
		t.Errorf("accounts mounted at %q from ConfigMap %q; want under /etc/nats-config from gerritflow-nats-auth", mountPath, configMap)
	}
	if inc := c.Merge["$include"]; "/etc/nats-config/"+strings.TrimPrefix(inc, "./") != mountPath+"/accounts.conf" {
		t.Errorf("$include %q does not name accounts.conf in %s", inc, mountPath)
	}
	for _, u := range natsauth.Users {
		e, ok := v.Container.Env[natsauth.PasswordEnv(u)]
		if !ok || e.ValueFrom.SecretKeyRef.Name != "gerritflow-nats" || e.ValueFrom.SecretKeyRef.Key != u {
			t.Errorf("the server's %s is not from Secret gerritflow-nats key %s", natsauth.PasswordEnv(u), u)
		}
	}
	if len(v.Container.Env) != len(natsauth.Users) {
		t.Errorf("%d env variables; accounts.conf reads %d", len(v.Container.Env), len(natsauth.Users))
	}
	if !v.PodDisruptionBudget.Enabled {
		t.Error("no PodDisruptionBudget for the NATS servers")
	}
}

func fmtSeconds(s *int64) string {
	if s == nil {
		return "unset"
	}
	return strconv.FormatInt(*s, 10) + "s"
}
