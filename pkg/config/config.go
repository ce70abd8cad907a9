// Package config loads gerritflow's one YAML file. Every service reads its part;
// unknown keys and invalid values stop the service at start with a message that
// names the key.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Config is the whole file.
type Config struct {
	NATS    NATS    `yaml:"nats"`
	Kinesis Kinesis `yaml:"kinesis"`
	Jenkins Jenkins `yaml:"jenkins"`
	Gerrit  Gerrit  `yaml:"gerrit"`
	Otel    Otel    `yaml:"otel"`
	Listen  Listen  `yaml:"listen"`
	Jobs    []Job   `yaml:"jobs"`
	Vote    Vote    `yaml:"vote"`
	Parser  Parser  `yaml:"parser"`
	Trigger Trigger `yaml:"trigger"`
	Monitor Monitor `yaml:"monitor"`
	Stages  Stages  `yaml:"stages"`
	Status  Status  `yaml:"status"`
}

// NATS is how services reach the broker. A service authenticates with a
// .creds file (JWT and NKey) or with a user and password; either way the
// configuration file can be shared by every service while each one logs in
// as itself: user_env, password_env and password_file name what differs per
// process (docs/deploy.md).
//
// InboxPrefix is the subject prefix of the connection's reply inboxes (API
// replies, PubAcks, pull and watch deliveries), so that the server lets each
// user subscribe to its own replies only. Empty means: _INBOX_<user> when the
// connection logs in as a user (nats.user, nats.user_env, or a user and
// password in nats.url), and nats.go's default _INBOX otherwise (a .creds
// file, a client certificate, a token, no authentication). A user name that
// is not one subject token (it holds ".", "*", ">" or a space) needs an
// explicit inbox_prefix.
type NATS struct {
	URL   string `yaml:"url"`
	Creds string `yaml:"creds"` // path to a .creds file
	// User, or the environment variable holding it (UserEnv), and the
	// password from an environment variable or a file.
	User         string `yaml:"user"`
	UserEnv      string `yaml:"user_env"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	// TLS: a CA file to trust and an optional client certificate.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InboxPrefix: see above; a subject of literal tokens ("_INBOX_parser").
	// InboxPrefixEnv names an environment variable holding it instead: the
	// way one shared file gives each service its own inbox when the login
	// does not name a user (a .creds file, a client certificate).
	InboxPrefix    string `yaml:"inbox_prefix"`
	InboxPrefixEnv string `yaml:"inbox_prefix_env"`
}

// Kinesis is where Gerrit's events arrive.
type Kinesis struct {
	Stream   string `yaml:"stream"`
	Region   string `yaml:"region"`
	Endpoint string `yaml:"endpoint"` // "" = AWS; the emulator's URL in dev
	// Start is where a shard with no checkpoint starts: latest, trim_horizon or at_timestamp.
	Start     string    `yaml:"start"`
	StartTime time.Time `yaml:"start_time"` // with start: at_timestamp
	// AccessKeyEnv and SecretKeyEnv name environment variables holding static
	// credentials; empty means the AWS default chain.
	AccessKeyEnv string `yaml:"access_key_env"`
	SecretKeyEnv string `yaml:"secret_key_env"`
	// PollInterval is the calm GetRecords interval of a caught-up shard.
	PollInterval Duration `yaml:"poll_interval"`
	// MaxInFlight bounds the bridge's asynchronous publishes awaiting a PubAck.
	MaxInFlight int `yaml:"max_in_flight"`
	// LeaseTTL bounds how long a dead bridge replica keeps its shards.
	LeaseTTL Duration `yaml:"lease_ttl"`
}

// Jenkins is the CI server.
type Jenkins struct {
	URL       string `yaml:"url"`
	User      string `yaml:"user"`
	TokenEnv  string `yaml:"token_env"`
	TokenFile string `yaml:"token_file"` // instead of token_env: a mounted secret
	// RequestsPerSecond and MaxConcurrent bound the load one replica puts on Jenkins.
	RequestsPerSecond float64  `yaml:"requests_per_second"`
	MaxConcurrent     int      `yaml:"max_concurrent"`
	Timeout           Duration `yaml:"timeout"`
}

// Gerrit is the code review server.
type Gerrit struct {
	URL          string   `yaml:"url"`
	User         string   `yaml:"user"`
	PasswordEnv  string   `yaml:"password_env"`
	PasswordFile string   `yaml:"password_file"` // instead of password_env: a mounted secret
	Timeout      Duration `yaml:"timeout"`
}

// Otel configures trace export.
type Otel struct {
	Endpoint          string `yaml:"endpoint"` // "" = no export
	Protocol          string `yaml:"protocol"` // grpc (default) or http
	Insecure          bool   `yaml:"insecure"`
	ServiceNamePrefix string `yaml:"service_name_prefix"`
}

// Listen holds each service's /metrics /healthz /readyz address.
type Listen struct {
	Bridge  string `yaml:"bridge"`
	Parser  string `yaml:"parser"`
	Trigger string `yaml:"trigger"`
	Monitor string `yaml:"monitor"`
	Voter   string `yaml:"voter"`
	Status  string `yaml:"status"` // the status page, besides /metrics /healthz /readyz
}

// For returns the listen address of service.
func (l Listen) For(service string) string {
	switch service {
	case "bridge":
		return l.Bridge
	case "parser":
		return l.Parser
	case "trigger":
		return l.Trigger
	case "monitor":
		return l.Monitor
	case "voter":
		return l.Voter
	case "status":
		return l.Status
	}
	return ""
}

// Job is one Jenkins job and the events that start it.
type Job struct {
	Name       string            `yaml:"name"`
	JenkinsJob string            `yaml:"jenkins_job"`
	Events     []EventRule       `yaml:"events"`
	Projects   []string          `yaml:"projects"`
	Branches   []string          `yaml:"branches"`
	Topics     []string          `yaml:"topics"`
	Files      []string          `yaml:"files"`
	Parameters map[string]string `yaml:"parameters"`
	Voting     *bool             `yaml:"voting"` // default true
	// CancelOnMerge cancels this job's running builds when the change merges (check-only jobs).
	CancelOnMerge bool `yaml:"cancel_on_merge"`
}

// IsVoting reports whether the job's result counts in the vote.
func (j Job) IsVoting() bool { return j.Voting == nil || *j.Voting }

// EventRule is one kind of event that starts a job.
type EventRule struct {
	Type                 string         `yaml:"type"`
	ExcludeTrivialRebase bool           `yaml:"exclude_trivial_rebase"`
	ExcludeNoCodeChange  bool           `yaml:"exclude_no_code_change"`
	ExcludeWIP           bool           `yaml:"exclude_wip"`
	ExcludePrivate       bool           `yaml:"exclude_private"`
	Comment              string         `yaml:"comment"`   // regexp, matched per line
	Approvals            map[string]int `yaml:"approvals"` // label -> minimum value (all must hold)
}

// Vote is what the voter posts.
type Vote struct {
	Label    string `yaml:"label"`
	Success  int    `yaml:"success"`
	Failure  int    `yaml:"failure"`
	Unstable *int   `yaml:"unstable"`  // default: failure
	Aborted  *int   `yaml:"aborted"`   // default: failure
	NotBuilt *int   `yaml:"not_built"` // default: ignored, as the Gerrit Trigger plugin does
	TimedOut *int   `yaml:"timed_out"` // default: failure
	Tag      string `yaml:"tag"`
	Notify   string `yaml:"notify"`
	// Outdated decides what happens when the built patch set is no longer current:
	// post (the vote, saying so in the message), comment (message only) or skip.
	Outdated string `yaml:"outdated"`
	// Started posts a "build started" message when a build set begins.
	Started bool `yaml:"started"`
}

// Parser tunes the parser.
type Parser struct {
	MaxEventBytes int `yaml:"max_event_bytes"`
}

// Trigger tunes the trigger.
type Trigger struct {
	// CheckJobs verifies at start that every configured Jenkins job declares
	// GERRITFLOW_BUILD_ID (default true).
	CheckJobs *bool `yaml:"check_jobs"`
}

// Monitor tunes the monitor.
type Monitor struct {
	PollInterval    Duration `yaml:"poll_interval"`
	MaxPollInterval Duration `yaml:"max_poll_interval"`
	BuildTimeout    Duration `yaml:"build_timeout"`
}

// Status configures the status page (services/status).
type Status struct {
	// GerritWebURL is where people open changes ("" = gerrit.url); used when
	// a build set carries no change URL of its own.
	GerritWebURL string `yaml:"gerrit_web_url"`
	// JaegerURL is the Jaeger UI; "" = trace ids are shown without a link.
	JaegerURL string `yaml:"jaeger_url"`
	// Recent is how long finished build sets stay listed (default 1h).
	Recent Duration `yaml:"recent"`
	// MaxBuildSets bounds the build sets held in memory (default 10000):
	// beyond it the oldest finished ones go first, then the oldest in flight.
	MaxBuildSets int `yaml:"max_buildsets"`
}

// Stages tunes the consumer loop of every consuming service. A service may
// override it in its own section (trigger.stage, ...); zero values keep the
// service's defaults.
type Stages struct {
	Concurrency   int      `yaml:"concurrency"`
	HandleTimeout Duration `yaml:"handle_timeout"`
	DrainTimeout  Duration `yaml:"drain_timeout"`
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads "1m30s" style durations.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Secret is a credential. It never prints.
type Secret string

func (Secret) String() string               { return "REDACTED" }
func (Secret) GoString() string             { return "REDACTED" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("REDACTED") }
func (Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// Reveal returns the secret's value, for the one call that sends it.
func (s Secret) Reveal() string { return string(s) }

// ErrNoConfig is returned when neither --config nor GERRITFLOW_CONFIG is given.
var ErrNoConfig = errors.New("no config: pass --config PATH or set GERRITFLOW_CONFIG")

// Load reads the file named by --config in args (default $GERRITFLOW_CONFIG),
// strictly, and validates it.
func Load(args []string, getenv func(string) string) (*Config, error) {
	fs := flag.NewFlagSet("gerritflow", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", getenv("GERRITFLOW_CONFIG"), "path of the YAML config")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("flags: %w (the only flag is --config PATH)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("flags: unexpected argument %q (the only flag is --config PATH)", fs.Arg(0))
	}
	if *path == "" {
		return nil, ErrNoConfig
	}
	return LoadFile(*path)
}

// LoadFile reads and validates one config file.
func LoadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a config document.
func Parse(r io.Reader) (*Config, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty document")
		}
		return nil, err
	}
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	if c.NATS.URL == "" {
		c.NATS.URL = "nats://127.0.0.1:4222"
	}
	if c.Kinesis.Region == "" {
		c.Kinesis.Region = "us-east-1"
	}
	if c.Kinesis.Start == "" {
		c.Kinesis.Start = "latest"
	}
	if c.Kinesis.MaxInFlight == 0 {
		c.Kinesis.MaxInFlight = 256
	}
	if c.Otel.ServiceNamePrefix == "" {
		c.Otel.ServiceNamePrefix = "gerritflow"
	}
	if c.Otel.Protocol == "" {
		c.Otel.Protocol = "grpc"
	}
	if c.Vote.Label == "" {
		c.Vote.Label = "Verified"
	}
	if c.Vote.Success == 0 && c.Vote.Failure == 0 {
		c.Vote.Success, c.Vote.Failure = 1, -1
	}
	if c.Vote.Tag == "" {
		c.Vote.Tag = "autogenerated:gerritflow"
	}
	if c.Vote.Notify == "" {
		c.Vote.Notify = "OWNER"
	}
	if c.Vote.Outdated == "" {
		c.Vote.Outdated = "post"
	}
	if c.Parser.MaxEventBytes == 0 {
		c.Parser.MaxEventBytes = 1 << 20
	}
	if c.Status.Recent == 0 {
		c.Status.Recent = Duration(time.Hour)
	}
	if c.Status.MaxBuildSets == 0 {
		c.Status.MaxBuildSets = 10000
	}
}

// Validate checks every value and returns all problems at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	checkURL := func(key, v string, schemes ...string) {
		if v == "" {
			return
		}
		u, err := url.Parse(v)
		if err != nil || u.Host == "" {
			bad(key, "%q is not a URL", v)
			return
		}
		for _, s := range schemes {
			if u.Scheme == s {
				return
			}
		}
		bad(key, "scheme %q not allowed (want %s)", u.Scheme, strings.Join(schemes, " or "))
	}
	for _, u := range strings.Split(c.NATS.URL, ",") {
		checkURL("nats.url", strings.TrimSpace(u), "nats", "tls", "ws", "wss")
	}
	c.NATS.validate(bad)
	if c.NATS.InboxPrefix == "" && c.NATS.InboxPrefixEnv == "" && c.NATS.UserEnv == "" {
		// The user is known now (nats.user or nats.url): so is the prefix.
		if _, err := c.NATS.Inbox(c.NATS.User, func(string) string { return "" }); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range []struct{ env, file, envKey, fileKey string }{
		{c.Jenkins.TokenEnv, c.Jenkins.TokenFile, "jenkins.token_env", "jenkins.token_file"},
		{c.Gerrit.PasswordEnv, c.Gerrit.PasswordFile, "gerrit.password_env", "gerrit.password_file"},
	} {
		if s.env != "" && s.file != "" {
			bad(s.fileKey, "set %s or %s, not both", s.envKey, s.fileKey)
		}
	}
	checkURL("kinesis.endpoint", c.Kinesis.Endpoint, "http", "https")
	checkURL("jenkins.url", c.Jenkins.URL, "http", "https")
	checkURL("gerrit.url", c.Gerrit.URL, "http", "https")
	checkURL("status.gerrit_web_url", c.Status.GerritWebURL, "http", "https")
	checkURL("status.jaeger_url", c.Status.JaegerURL, "http", "https")
	if c.Status.Recent < 0 {
		bad("status.recent", "must not be negative")
	}
	if c.Status.MaxBuildSets < 0 {
		bad("status.max_buildsets", "must be positive")
	}
	switch c.Kinesis.Start {
	case "latest", "trim_horizon":
	case "at_timestamp":
		if c.Kinesis.StartTime.IsZero() {
			bad("kinesis.start_time", "required with start: at_timestamp")
		}
	default:
		bad("kinesis.start", "%q is not one of latest, trim_horizon, at_timestamp", c.Kinesis.Start)
	}
	if c.Kinesis.MaxInFlight < 0 {
		bad("kinesis.max_in_flight", "must be positive")
	}
	switch c.Otel.Protocol {
	case "grpc", "http":
	default:
		bad("otel.protocol", "%q is not grpc or http", c.Otel.Protocol)
	}
	for key, v := range map[string]string{"listen.bridge": c.Listen.Bridge, "listen.parser": c.Listen.Parser,
		"listen.trigger": c.Listen.Trigger, "listen.monitor": c.Listen.Monitor, "listen.voter": c.Listen.Voter,
		"listen.status": c.Listen.Status} {
		if v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "%q is not host:port", v)
		}
	}
	if c.Jenkins.RequestsPerSecond < 0 {
		bad("jenkins.requests_per_second", "must not be negative")
	}
	if c.Jenkins.MaxConcurrent < 0 {
		bad("jenkins.max_concurrent", "must not be negative")
	}
	names := map[string]bool{}
	for i, j := range c.Jobs {
		key := fmt.Sprintf("jobs[%d]", i)
		if j.Name == "" {
			bad(key+".name", "required")
		} else if names[j.Name] {
			bad(key+".name", "%q is used by another job", j.Name)
		}
		names[j.Name] = true
		if j.JenkinsJob == "" {
			bad(key+".jenkins_job", "required")
		} else if strings.HasPrefix(j.JenkinsJob, "/") || strings.HasSuffix(j.JenkinsJob, "/") || strings.Contains(j.JenkinsJob, "//") {
			bad(key+".jenkins_job", "%q: write folders as a/b/c", j.JenkinsJob)
		}
		if len(j.Events) == 0 {
			bad(key+".events", "at least one event rule is required")
		}
		for k, e := range j.Events {
			ek := fmt.Sprintf("%s.events[%d]", key, k)
			if !triggerTypes[e.Type] {
				bad(ek+".type", "%q is not an event type a job can be started by (%s)", e.Type, strings.Join(TriggerTypes(), ", "))
			}
			if e.Comment != "" {
				if _, err := regexp.Compile(e.Comment); err != nil {
					bad(ek+".comment", "invalid regexp: %v", err)
				}
				if e.Type != "comment-added" {
					bad(ek+".comment", "only applies to type comment-added")
				}
			}
			if len(e.Approvals) > 0 && e.Type != "comment-added" {
				bad(ek+".approvals", "only applies to type comment-added")
			}
		}
		for kind, list := range map[string][]string{"projects": j.Projects, "branches": j.Branches, "topics": j.Topics, "files": j.Files} {
			for k, p := range list {
				if _, err := CompilePattern(p); err != nil {
					bad(fmt.Sprintf("%s.%s[%d]", key, kind, k), "%v", err)
				}
			}
		}
		if len(j.Projects) == 0 {
			bad(key+".projects", "at least one project pattern is required (use \"glob:**\" for all)")
		}
		for p := range j.Parameters {
			if p == "" || strings.HasPrefix(p, "GERRIT_") || p == "GERRITFLOW_BUILD_ID" {
				bad(key+".parameters."+p, "reserved or empty parameter name")
			}
		}
	}
	if c.Vote.Label == "" {
		bad("vote.label", "required")
	}
	switch c.Vote.Notify {
	case "NONE", "OWNER", "OWNER_REVIEWERS", "ALL":
	default:
		bad("vote.notify", "%q is not one of NONE, OWNER, OWNER_REVIEWERS, ALL", c.Vote.Notify)
	}
	switch c.Vote.Outdated {
	case "post", "comment", "skip":
	default:
		bad("vote.outdated", "%q is not one of post, comment, skip", c.Vote.Outdated)
	}
	if c.Vote.Success <= 0 {
		bad("vote.success", "must be positive")
	}
	if c.Vote.Failure >= 0 {
		bad("vote.failure", "must be negative")
	}
	if c.Parser.MaxEventBytes < 0 {
		bad("parser.max_event_bytes", "must be positive")
	}
	if c.Stages.Concurrency < 0 || c.Stages.Concurrency > 1024 {
		bad("stages.concurrency", "must be between 1 and 1024")
	}
	return errors.Join(errs...)
}

var triggerTypes = map[string]bool{
	"patchset-created": true, "comment-added": true, "change-merged": true, "change-restored": true,
	"ref-updated": true, "wip-state-changed": true, "private-state-changed": true, "topic-changed": true,
}

// TriggerTypes lists the event types a job may be started by.
func TriggerTypes() []string {
	return []string{"patchset-created", "comment-added", "change-merged", "change-restored", "ref-updated",
		"wip-state-changed", "private-state-changed", "topic-changed"}
}

// SecretFromEnv reads the credential named by an *_env key. key is the config
// key, used in the error when the variable is unset.
func SecretFromEnv(key, envName string, getenv func(string) string) (Secret, error) {
	if envName == "" {
		return "", fmt.Errorf("%s: required (the name of the environment variable holding the secret)", key)
	}
	v := getenv(envName)
	if v == "" {
		return "", fmt.Errorf("%s: environment variable %s is empty or unset", key, envName)
	}
	return Secret(v), nil
}

// SecretFromFile reads the credential in the file named by an *_file key
// (a mounted Kubernetes or Docker secret). One trailing line break is not
// part of the secret. key is the config key, used in errors, which never
// hold the file's content.
func SecretFromFile(key, path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return "", fmt.Errorf("%s: read %s: %v", key, path, err)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", key, path)
	}
	return Secret(v), nil
}

// secret reads a credential from the file or the environment variable the
// configuration names (Validate has refused both at once).
func secret(envKey, envName, fileKey, path string, getenv func(string) string) (Secret, error) {
	if path != "" {
		return SecretFromFile(fileKey, path)
	}
	return SecretFromEnv(envKey, envName, getenv)
}

// JenkinsToken returns the Jenkins API token.
func (c *Config) JenkinsToken(getenv func(string) string) (Secret, error) {
	if c.Jenkins.URL == "" {
		return "", errors.New("jenkins.url: required")
	}
	return secret("jenkins.token_env", c.Jenkins.TokenEnv, "jenkins.token_file", c.Jenkins.TokenFile, getenv)
}

// GerritPassword returns the Gerrit HTTP password.
func (c *Config) GerritPassword(getenv func(string) string) (Secret, error) {
	if c.Gerrit.URL == "" {
		return "", errors.New("gerrit.url: required")
	}
	return secret("gerrit.password_env", c.Gerrit.PasswordEnv, "gerrit.password_file", c.Gerrit.PasswordFile, getenv)
}

// validate checks the NATS authentication keys: one way to log in at most,
// and a user always with its password.
func (n NATS) validate(bad func(key, format string, args ...any)) {
	if n.User != "" && n.UserEnv != "" {
		bad("nats.user_env", "set nats.user or nats.user_env, not both")
	}
	if n.PasswordEnv != "" && n.PasswordFile != "" {
		bad("nats.password_file", "set nats.password_env or nats.password_file, not both")
	}
	user := n.User != "" || n.UserEnv != ""
	password := n.PasswordEnv != "" || n.PasswordFile != ""
	switch {
	case user && !password:
		bad("nats.password_env", "required with a NATS user (or nats.password_file)")
	case password && !user:
		bad("nats.user", "required with a NATS password (or nats.user_env)")
	case user && n.Creds != "":
		bad("nats.creds", "a .creds file and a user/password are two ways to log in: keep one")
	}
	if user && strings.Contains(n.URL, "@") {
		bad("nats.url", "holds credentials; with nats.user keep them out of the URL")
	}
	if n.InboxPrefix != "" && n.InboxPrefixEnv != "" {
		bad("nats.inbox_prefix_env", "set nats.inbox_prefix or nats.inbox_prefix_env, not both")
	}
	if n.InboxPrefix != "" && !literalSubject(n.InboxPrefix) {
		bad("nats.inbox_prefix", "%q "+notLiteral, n.InboxPrefix)
	}
}

// DefaultInbox is nats.go's inbox prefix, used when no user logs in.
const DefaultInbox = "_INBOX"

// notLiteral is why an inbox prefix is refused.
const notLiteral = "is not a subject of literal tokens (no *, >, spaces, empty tokens or trailing dot)"

// Inbox returns the inbox prefix of the connection (see NATS): nats.inbox_prefix,
// or the value of the variable nats.inbox_prefix_env names, or _INBOX_<user>,
// or DefaultInbox. user is the user UserPassword resolved; when it is empty
// the user in nats.url is taken, if any.
func (n NATS) Inbox(user string, getenv func(string) string) (string, error) {
	if n.InboxPrefixEnv != "" {
		v := getenv(n.InboxPrefixEnv)
		switch {
		case v == "":
			return "", fmt.Errorf("nats.inbox_prefix_env: environment variable %s is empty or unset", n.InboxPrefixEnv)
		case !literalSubject(v):
			return "", fmt.Errorf("nats.inbox_prefix_env: %s=%q "+notLiteral, n.InboxPrefixEnv, v)
		}
		return v, nil
	}
	if n.InboxPrefix != "" {
		if !literalSubject(n.InboxPrefix) {
			return "", fmt.Errorf("nats.inbox_prefix: %q "+notLiteral, n.InboxPrefix)
		}
		return n.InboxPrefix, nil
	}
	if user == "" {
		var err error
		if user, err = n.urlUser(); err != nil {
			return "", err
		}
	}
	if user == "" {
		return DefaultInbox, nil
	}
	if !literalSubject(user) || strings.Contains(user, ".") {
		return "", fmt.Errorf("nats.inbox_prefix: user %q cannot be an inbox token; set nats.inbox_prefix", user)
	}
	return DefaultInbox + "_" + user, nil
}

// urlUser returns the user that nats.url logs in as ("" for none, or a token
// without a password). Every URL of the list must agree: nats.go sends the
// credentials of the server it reaches. URLs that do not parse are left to
// Validate.
func (n NATS) urlUser() (string, error) {
	var users []string
	for _, raw := range strings.Split(n.URL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); !ok {
			continue // a token: no user name
		}
		if name := u.User.Username(); name != "" && !slices.Contains(users, name) {
			users = append(users, name)
		}
	}
	switch len(users) {
	case 0:
		return "", nil
	case 1:
		return users[0], nil
	}
	return "", fmt.Errorf("nats.inbox_prefix: nats.url logs in as several users (%s); set nats.inbox_prefix", strings.Join(users, ", "))
}

// literalSubject reports whether s is a NATS subject of literal tokens: no
// wildcard, no white space, no empty token.
func literalSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, "*>") || strings.ContainsFunc(s, unicode.IsSpace) {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
	}
	return true
}

// UserPassword returns the NATS user and password the configuration names,
// or empty values when it names none (no authentication, a .creds file or
// credentials in the URL).
func (n NATS) UserPassword(getenv func(string) string) (user string, password Secret, err error) {
	if n.User == "" && n.UserEnv == "" {
		return "", "", nil
	}
	user = n.User
	if n.UserEnv != "" {
		if user = getenv(n.UserEnv); user == "" {
			return "", "", fmt.Errorf("nats.user_env: environment variable %s is empty or unset", n.UserEnv)
		}
	}
	password, err = secret("nats.password_env", n.PasswordEnv, "nats.password_file", n.PasswordFile, getenv)
	return user, password, err
}
