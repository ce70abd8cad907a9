// Package sim runs the project's Jenkins and Gerrit simulators as a program
// of their own (`gfdev sim`, the `sims` profile of docker-compose.yml), set
// up from the same gerritflow config file the services read:
//
//   - Jenkins (pkg/jenkinssim) has every job that jobs[].jenkins_job names,
//     each declaring GERRITFLOW_BUILD_ID and the GERRIT_* parameters, and
//     accepts jenkins.user with the token in jenkins.token_env. Builds pass,
//     or follow their change's subject: "[fail]" fails, "[unstable]" is
//     unstable, "[flaky]" fails the first build of a change and then passes.
//   - Gerrit (pkg/gerritsim) accepts gerrit.user with the password of
//     gerrit.password_env, and writes every stream event into kinesis.stream
//     as the events-aws-kinesis plugin does (one record per event, the event
//     type as partition key).
//   - The Gerrit port also serves gerritsim's admin API under /sim/, so that
//     a person or a script plays the developers: POST /sim/changes creates a
//     change, POST /sim/changes/N/comments comments "recheck".
//
// The stack of `make dev` (internal/stack) runs the same pieces in-process.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
)

// JobParams are the parameters every simulated job declares: the ones the
// trigger passes (the Gerrit Trigger plugin's family and GERRITFLOW_BUILD_ID).
// Jenkins drops parameters a job does not declare.
var JobParams = []string{"GERRITFLOW_BUILD_ID", "GERRIT_PROJECT", "GERRIT_BRANCH", "GERRIT_CHANGE_NUMBER", "GERRIT_CHANGE_ID",
	"GERRIT_PATCHSET_NUMBER", "GERRIT_PATCHSET_REVISION", "GERRIT_REFSPEC", "GERRIT_EVENT_TYPE", "GERRIT_CHANGE_SUBJECT",
	"GERRIT_CHANGE_URL", "GERRIT_CHANGE_OWNER_NAME", "GERRIT_CHANGE_OWNER_EMAIL", "GERRIT_EVENT_ACCOUNT_NAME", "GERRIT_TOPIC"}

// Options configure Start.
type Options struct {
	// Config is the gerritflow config whose jenkins, gerrit, kinesis and jobs
	// sections the simulators follow.
	Config *config.Config
	// Getenv reads the secrets the config names (os.Getenv).
	Getenv func(string) string
	// JenkinsListen and GerritListen are the addresses to serve on; empty
	// means the host and port of jenkins.url and gerrit.url.
	JenkinsListen, GerritListen string
	// NotifyURL makes Jenkins push the Notification plugin's JSON there (the
	// monitor's /jenkins/notify); empty: no push, the monitor polls.
	NotifyURL string
	// BuildDuration is how long a build runs (default 5s).
	BuildDuration time.Duration
	// Log receives one line per event written and per failure (nil: discarded).
	Log io.Writer
}

// Sims are the running simulators.
type Sims struct {
	Jenkins *jenkinssim.Server
	Gerrit  *gerritsim.Server
	Sink    *Sink

	gerritAddr string
	gerritSrv  *http.Server
	served     chan error
}

// Start serves both simulators until Close. On error nothing keeps running.
func Start(ctx context.Context, o Options) (s *Sims, err error) {
	c := o.Config
	if c == nil {
		return nil, errors.New("sim: no config")
	}
	if o.Getenv == nil {
		return nil, errors.New("sim: no Getenv")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.BuildDuration <= 0 {
		o.BuildDuration = 5 * time.Second
	}
	if o.JenkinsListen == "" {
		if o.JenkinsListen, err = hostPort("jenkins.url", c.Jenkins.URL); err != nil {
			return nil, err
		}
	}
	if o.GerritListen == "" {
		if o.GerritListen, err = hostPort("gerrit.url", c.Gerrit.URL); err != nil {
			return nil, err
		}
	}
	token, err := c.JenkinsToken(o.Getenv)
	if err != nil {
		return nil, err
	}
	password, err := c.GerritPassword(o.Getenv)
	if err != nil {
		return nil, err
	}
	if len(c.Jobs) == 0 {
		return nil, errors.New("sim: the config has no jobs: Jenkins would have nothing to build")
	}
	kc, err := kinesislocal.ClientFor(ctx, c.Kinesis, o.Getenv)
	if err != nil {
		return nil, err
	}

	s = &Sims{served: make(chan error, 1)}
	s.Jenkins, err = jenkinssim.Listen(o.JenkinsListen, jenkinssim.Options{User: c.Jenkins.User, Token: token.Reveal(), NotifyURL: o.NotifyURL})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Jenkins.Close()
		}
	}()
	seen := map[string]bool{}
	for _, j := range c.Jobs {
		if !seen[j.JenkinsJob] {
			seen[j.JenkinsJob] = true
			s.Jenkins.AddJob(j.JenkinsJob, JobParams...)
			ScriptBySubject(s.Jenkins, j.JenkinsJob, o.BuildDuration)
		}
	}

	ln, err := net.Listen("tcp", o.GerritListen)
	if err != nil {
		return nil, fmt.Errorf("sim: gerrit: listen %s: %w", o.GerritListen, err)
	}
	// change.url in events is the URL the services and people use.
	s.Gerrit = gerritsim.New(gerritsim.Options{User: c.Gerrit.User, Password: password.Reveal(), URL: strings.TrimRight(c.Gerrit.URL, "/")})
	s.Sink = NewSink(kc, c.Kinesis.Stream, func(format string, args ...any) { fmt.Fprintf(o.Log, "sim: "+format+"\n", args...) })
	s.Gerrit.OnEvent(s.Sink.OnEvent(context.WithoutCancel(ctx)))
	mux := http.NewServeMux()
	mux.Handle("/sim/", s.Gerrit.AdminHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/", s.Gerrit.Handler())
	s.gerritAddr = ln.Addr().String()
	s.gerritSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { s.served <- s.gerritSrv.Serve(ln) }()
	return s, nil
}

// JenkinsURL and GerritURL are where the simulators listen.
func (s *Sims) JenkinsURL() string { return s.Jenkins.URL() }

// GerritURL is the Gerrit simulator's listening URL (REST and /sim/).
func (s *Sims) GerritURL() string { return "http://" + s.gerritAddr }

// Close stops both listeners; events already handed to the sink finish
// their PutRecord (up to its retry limit) first.
func (s *Sims) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.gerritSrv.Shutdown(ctx)
	if serr := <-s.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return errors.Join(err, s.Gerrit.Close(), s.Jenkins.Close())
}

// hostPort is the listen address of a configured URL (http://jenkins:8080 ->
// jenkins:8080; no port: 80 or 443).
func hostPort(key, raw string) (string, error) {
	rest, ok := strings.CutPrefix(raw, "http://")
	port := "80"
	if !ok {
		if rest, ok = strings.CutPrefix(raw, "https://"); !ok {
			return "", fmt.Errorf("sim: %s %q: want an http(s) URL", key, raw)
		}
		port = "443"
	}
	host, _, _ := strings.Cut(rest, "/")
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host, nil
	}
	return net.JoinHostPort(host, port), nil
}

// ScriptBySubject makes job's builds follow their change's subject:
// "[fail]" fails, "[unstable]" is unstable, "[flaky]" fails the first build
// of each change and passes afterwards (a recheck passes); anything else
// passes. Builds run for d after 200ms in the queue.
func ScriptBySubject(j *jenkinssim.Server, job string, d time.Duration) {
	var mu sync.Mutex
	seen := map[string]int{}
	j.Script(job, func(p map[string]string) jenkinssim.Outcome {
		o := jenkinssim.Outcome{Result: "SUCCESS", Duration: d, QueueDelay: 200 * time.Millisecond, EstimatedDuration: d}
		subject := p["GERRIT_CHANGE_SUBJECT"]
		switch {
		case strings.Contains(subject, "[fail]"):
			o.Result = "FAILURE"
		case strings.Contains(subject, "[unstable]"):
			o.Result = "UNSTABLE"
		case strings.Contains(subject, "[flaky]"):
			mu.Lock()
			seen[p["GERRIT_CHANGE_NUMBER"]]++
			if seen[p["GERRIT_CHANGE_NUMBER"]] == 1 {
				o.Result = "FAILURE"
			}
			mu.Unlock()
		}
		return o
	})
}

// Sink stands in for Gerrit's events-aws-kinesis plugin: every event becomes
// one Kinesis record. A failed PutRecord is retried for up to 30 seconds (the
// plugin's own publisher retries too); only then is the event given up,
// counted and logged: gerritflow never saw it.
type Sink struct {
	client            *kinesis.Client
	stream            string
	logf              func(format string, args ...any)
	puts              atomic.Int64
	retries, failures atomic.Int64
}

// NewSink writes into stream (a name or an ARN) through client; logf
// receives the failures (nil: none logged).
func NewSink(client *kinesis.Client, stream string, logf func(format string, args ...any)) *Sink {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Sink{client: client, stream: stream, logf: logf}
}

// OnEvent is the gerritsim.Server.OnEvent function that writes each event.
func (k *Sink) OnEvent(ctx context.Context) func(eventType string, data []byte) {
	return func(eventType string, data []byte) {
		deadline := time.Now().Add(30 * time.Second)
		wait := 50 * time.Millisecond
		for {
			_, _, err := gerritsim.PutEvent(ctx, k.client, k.stream, eventType, data)
			if err == nil {
				k.puts.Add(1)
				return
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				k.failures.Add(1)
				k.logf("kinesis put: giving up on a %s event: %v", eventType, err)
				return
			}
			k.retries.Add(1)
			time.Sleep(wait)
			wait = min(2*wait, time.Second)
		}
	}
}

// Puts is the number of events written, Failures the number given up after
// 30 seconds of failed PutRecord calls, Retries the calls retried.
func (k *Sink) Puts() int64 { return k.puts.Load() }

// Failures is the number of events that never reached Kinesis.
func (k *Sink) Failures() int64 { return k.failures.Load() }

// Retries is the number of PutRecord calls retried.
func (k *Sink) Retries() int64 { return k.retries.Load() }
