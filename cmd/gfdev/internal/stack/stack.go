// Package stack runs the whole gerritflow pipeline on one machine: an
// embedded nats-server with JetStream on a file store, the Kinesis emulator,
// the Jenkins and Gerrit simulators, the five services and the status page as
// separate processes built from this workspace. `make dev` and the end-to-end
// tests use it.
package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/sim"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/streams"
)

// Services in pipeline order.
var Services = []string{"bridge", "parser", "trigger", "monitor", "voter"}

// Viewers are the processes beside the pipeline that only read it: the
// status page (listen.status).
var Viewers = []string{"status"}

// Processes is every process the stack runs: the pipeline, then the viewers.
func Processes() []string { return append(append([]string(nil), Services...), Viewers...) }

// Secrets the simulators accept; the services read them from the environment.
const (
	JenkinsToken   = "dev-jenkins-token"
	GerritPassword = "dev-gerrit-password"
	KinesisStream  = "gerrit-events"
)

// Options configures a stack.
type Options struct {
	// Root is the workspace root (holding go.work); "" finds it from the working directory.
	Root string
	// Dir holds the state: NATS store, config, logs, binaries. It is wiped at start.
	Dir string
	// NATSPort is the client port (0: a free one).
	NATSPort int
	// Shards of the Kinesis stream (default 2).
	Shards int
	// Replicas per service (default 1 each).
	Replicas map[string]int
	// ExtraConfig is appended to the generated config (YAML).
	ExtraConfig string
	// Jobs is the jobs section of the config; "" uses DevJobs.
	Jobs string
	// Log receives the stack's own messages (nil: discarded).
	Log io.Writer
	// NATSOptions adjusts the embedded server's options (accounts, users, TLS).
	NATSOptions func(*server.Options)
	// JenkinsOptions adjusts the Jenkins simulator's options (e.g. how long
	// it remembers queue items that left the queue).
	JenkinsOptions func(*jenkinssim.Options)
	// AdminURL is how the stack itself (provisioning, tests) connects when the
	// server has users; "" = the server's client URL.
	AdminURL func(clientURL string) string
	// ServiceNATS gives a service its own nats section (e.g. a URL with its
	// user, or a creds file); "" keeps the shared one.
	ServiceNATS func(service, clientURL string) string
	// ViewerNATS does for the viewers (the status page) what ServiceNATS does
	// for the services. With ServiceNATS set and ViewerNATS nil, the viewers
	// are not started: the server has users and none is named for them.
	ViewerNATS func(viewer, clientURL string) string
	// Env is extra environment ("KEY=value") of every process the stack
	// starts, after the stack's own: a key set here wins (e.g. other AWS keys
	// than the emulator's "local", or a NATS password for nats.password_env).
	// The stack's own clients of the emulator and the simulators do not use it.
	Env []string
}

// DevJobs are the jobs of the demo: a voting unit-test job and a non-voting lint job.
const DevJobs = `jobs:
  - name: unit
    jenkins_job: folder/unit-tests
    events:
      - { type: patchset-created, exclude_trivial_rebase: true, exclude_no_code_change: true }
      - { type: comment-added, comment: '(?mi)^\s*recheck\s*$' }
    projects: [ "platform/core", "glob:tools/**" ]
    branches: [ "main", "glob:release/*" ]
  - name: lint
    jenkins_job: lint
    events:
      - { type: patchset-created }
      - { type: comment-added, comment: '(?mi)^\s*recheck\s*$' }
    projects: [ "platform/core", "glob:tools/**" ]
    voting: false
`

// Stack is a running pipeline.
type Stack struct {
	opts    Options
	NATS    *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	Kinesis *kinesislocal.Emulator
	Jenkins *jenkinssim.Server
	Gerrit  *gerritsim.Server
	Config  string // path of the generated config
	Listen  map[string][]string

	mu    sync.Mutex
	procs map[string][]*Proc

	sink *sim.Sink // the events-aws-kinesis stand-in
}

// Proc is one service process.
type Proc struct {
	Name, Addr string
	Index      int
	bin, cfg   string
	logPath    string
	env        []string
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
}

// Start builds the services and starts everything; on error what was started is stopped.
func Start(ctx context.Context, opts Options) (s *Stack, err error) {
	if opts.Root == "" {
		if opts.Root, err = findRoot(); err != nil {
			return nil, err
		}
	}
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Jobs == "" {
		opts.Jobs = DevJobs
	}
	if err := os.RemoveAll(opts.Dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"nats", "logs", "bin"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	started := &Stack{opts: opts, procs: map[string][]*Proc{}, Listen: map[string][]string{}}
	s = started
	defer func() {
		if err != nil { // s is nil by then: stop what was started
			started.Stop()
		}
	}()
	s.logf("building services")
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	s.logf("starting nats-server (JetStream, file store %s)", filepath.Join(opts.Dir, "nats"))
	if err := s.startNATS(); err != nil {
		return nil, err
	}
	if err := streams.Provision(ctx, s.JS); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	s.logf("starting the Kinesis emulator (stream %s, %d shards)", KinesisStream, opts.Shards)
	if s.Kinesis, err = kinesislocal.Start(ctx, kinesislocal.Options{
		Dir: filepath.Join(opts.Root, "deploy", "local"), Streams: map[string]int{KinesisStream: opts.Shards},
	}); err != nil {
		return nil, err
	}
	jo := jenkinssim.Options{User: "ci", Token: JenkinsToken}
	if opts.JenkinsOptions != nil {
		opts.JenkinsOptions(&jo)
	}
	if s.Jenkins, err = jenkinssim.Listen("127.0.0.1:0", jo); err != nil {
		return nil, err
	}
	s.Jenkins.AddJob("folder/unit-tests", sim.JobParams...)
	s.Jenkins.AddJob("lint", sim.JobParams...)
	if s.Gerrit, err = gerritsim.Listen("127.0.0.1:0", gerritsim.Options{User: "ci", Password: GerritPassword}); err != nil {
		return nil, err
	}
	// Gerrit's events-aws-kinesis plugin: every event becomes one Kinesis record.
	s.sink = sim.NewSink(s.Kinesis.Client(), KinesisStream, s.logf)
	s.Gerrit.OnEvent(s.sink.OnEvent(context.WithoutCancel(ctx)))
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	names := Services
	if opts.ServiceNATS == nil || opts.ViewerNATS != nil {
		names = Processes()
	} else {
		s.logf("status page not started: the NATS server has users and Options.ViewerNATS names none for it")
	}
	for _, name := range names {
		n := opts.Replicas[name]
		if n == 0 {
			n = 1
		}
		for i := 0; i < n; i++ {
			if err := s.startProc(ctx, name, i); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "gfdev: "+format+"\n", args...)
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory: run from the gerritflow checkout")
		}
		dir = parent
	}
}

func (s *Stack) build(ctx context.Context) error {
	args := []string{"build", "-o", filepath.Join(s.opts.Dir, "bin") + string(filepath.Separator)}
	for _, name := range Processes() {
		args = append(args, "./services/"+name)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = s.opts.Root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build services: %v\n%s", err, out)
	}
	return nil
}

func (s *Stack) startNATS() error {
	port := s.opts.NATSPort
	if port == 0 {
		port = server.RANDOM_PORT
	} else if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		s.logf("port %d is taken; NATS listens on a free port instead", port)
		port = server.RANDOM_PORT
	} else {
		ln.Close()
	}
	ns, err := s.newNATS(port)
	if err != nil {
		return err
	}
	s.NATS = ns
	url := ns.ClientURL()
	if s.opts.AdminURL != nil {
		url = s.opts.AdminURL(url)
	}
	if s.NC, err = nats.Connect(url, nats.Name("gfdev"), nats.MaxReconnects(-1)); err != nil {
		return err
	}
	s.JS, err = jetstream.New(s.NC)
	return err
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *Stack) writeConfig() error {
	var listen []string
	for _, name := range Processes() {
		n := max(s.opts.Replicas[name], 1)
		for i := 0; i < n; i++ {
			a, err := freeAddr()
			if err != nil {
				return err
			}
			s.Listen[name] = append(s.Listen[name], a)
		}
		listen = append(listen, fmt.Sprintf("%s: %q", name, s.Listen[name][0]))
	}
	cfg := fmt.Sprintf(`# generated by gfdev: the whole pipeline on this machine
nats:    { url: %q }
kinesis: { stream: %s, region: us-east-1, endpoint: %q, start: trim_horizon,
           access_key_env: AWS_ACCESS_KEY_ID, secret_key_env: AWS_SECRET_ACCESS_KEY, poll_interval: 200ms, lease_ttl: 6s }
jenkins: { url: %q, user: ci, token_env: JENKINS_TOKEN }
gerrit:  { url: %q, user: ci, password_env: GERRIT_HTTP_PASSWORD }
listen:  { %s }
monitor: { poll_interval: 300ms, max_poll_interval: 2s }
stages:  { drain_timeout: 10s }
vote:    { label: Verified, success: 1, failure: -1, tag: "autogenerated:gerritflow", notify: OWNER }
%s%s`, s.NATS.ClientURL(), KinesisStream, s.Kinesis.Endpoint(), s.Jenkins.URL(), s.Gerrit.URL(),
		strings.Join(listen, ", "), s.opts.Jobs, s.otelConfig()+s.opts.ExtraConfig)
	s.Config = filepath.Join(s.opts.Dir, "gerritflow.yaml")
	return os.WriteFile(s.Config, []byte(cfg), 0o600)
}

func (s *Stack) startProc(ctx context.Context, name string, i int) error {
	p := &Proc{
		Name: name, Index: i, Addr: s.Listen[name][i],
		bin:     filepath.Join(s.opts.Dir, "bin", name),
		logPath: filepath.Join(s.opts.Dir, "logs", fmt.Sprintf("%s-%d.log", name, i)),
		env: append(os.Environ(),
			"JENKINS_TOKEN="+JenkinsToken, "GERRIT_HTTP_PASSWORD="+GerritPassword,
			"AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local"),
	}
	p.env = append(p.env, s.opts.Env...) // exec uses the last value of a key
	// Each process has its own config: its own listen address, and its own
	// NATS identity when the server has users.
	data, err := os.ReadFile(s.Config)
	if err != nil {
		return err
	}
	c := strings.Replace(string(data), fmt.Sprintf("%s: %q", name, s.Listen[name][0]), fmt.Sprintf("%s: %q", name, p.Addr), 1)
	identity := s.opts.ServiceNATS
	if slices.Contains(Viewers, name) {
		identity = s.opts.ViewerNATS
	}
	if identity != nil {
		if n := identity(name, s.NATS.ClientURL()); n != "" {
			c = strings.Replace(c, fmt.Sprintf("nats:    { url: %q }", s.NATS.ClientURL()), "nats: "+n, 1)
		}
	}
	p.cfg = filepath.Join(s.opts.Dir, fmt.Sprintf("gerritflow-%s-%d.yaml", name, i))
	if err := os.WriteFile(p.cfg, []byte(c), 0o600); err != nil {
		return err
	}
	s.mu.Lock()
	s.procs[name] = append(s.procs[name], p)
	s.mu.Unlock()
	if err := p.Start(); err != nil {
		return err
	}
	return p.WaitReady(ctx, 60*time.Second)
}

// Start runs the process (again), appending to its log.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, "--config", p.cfg)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// PID of the running process (0 when stopped).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// WaitReady polls /readyz until it answers 200 or the process exits.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("%s-%d exited before it was ready; its log:\n%s", p.Name, p.Index, p.Tail(30))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get("http://" + p.Addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s-%d not ready after %v; its log:\n%s", p.Name, p.Index, timeout, p.Tail(30))
}

// Stop sends SIGTERM to the process by its PID and waits for it to drain
// (SIGKILL after grace).
func (p *Proc) Stop(grace time.Duration) error {
	return p.signal(syscall.SIGTERM, grace)
}

// Kill sends SIGKILL by PID: no drain, no release of leases.
func (p *Proc) Kill() error { return p.signal(syscall.SIGKILL, 5*time.Second) }

func (p *Proc) signal(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = syscall.Kill(cmd.Process.Pid, sig)
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s-%d did not stop within %v: killed", p.Name, p.Index, grace)
	}
}

// ExitCode is the exit status of the last run (-1 while running or if killed by a signal).
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Tail returns the last n lines of the process's log.
func (p *Proc) Tail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// LogPath is the file the process writes its JSON log to.
func (p *Proc) LogPath() string { return p.logPath }

// Procs returns the processes of service name.
func (s *Stack) Procs(name string) []*Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Proc(nil), s.procs[name]...)
}

// StatusURL is the page of the first status process ("" when none runs).
func (s *Stack) StatusURL() string {
	if p := s.Procs("status"); len(p) > 0 {
		return "http://" + p[0].Addr + "/"
	}
	return ""
}

// Stop stops the processes (SIGTERM: the viewers, then the services in
// reverse pipeline order), then the simulators, the emulator and NATS. It
// reports processes that did not drain.
func (s *Stack) Stop() error {
	var errs []error
	procs := Processes()
	for i := len(procs) - 1; i >= 0; i-- {
		for _, p := range s.Procs(procs[i]) {
			if err := p.Stop(20 * time.Second); err != nil {
				errs = append(errs, err)
			} else if code := p.ExitCode(); code > 0 {
				errs = append(errs, fmt.Errorf("%s-%d exited with %d; its log:\n%s", p.Name, p.Index, code, p.Tail(10)))
			}
		}
	}
	if s.Gerrit != nil {
		s.Gerrit.Close()
	}
	if s.Jenkins != nil {
		s.Jenkins.Close()
	}
	if s.Kinesis != nil {
		errs = append(errs, s.Kinesis.Stop())
	}
	if s.NC != nil {
		s.NC.Close()
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
	}
	return errors.Join(errs...)
}
