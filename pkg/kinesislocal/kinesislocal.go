// Package kinesislocal runs the kinesis-mock emulator (npm package
// kinesis-local, pinned in deploy/local/package-lock.json) for tests and for
// the local dev runner, and builds the aws-sdk-go-v2 Kinesis clients that the
// bridge and the dev tools share (NewClient).
//
// The emulator is a Node program. Start installs it with `npm ci` when needed,
// runs `node main.js` in its package folder (it reads server.json there) in its
// own process group, on free loopback ports (a preloaded script rebinds its
// hard-coded 0.0.0.0 listeners to 127.0.0.1), and waits until it answers and the
// requested streams are ACTIVE. Clients talk to its plain-HTTP port.
//
// The preload (preload.js) also makes SIGTERM close client keep-alive
// connections, which the emulator's graceful shutdown would otherwise wait on,
// and lets AdvanceClock move the emulator's wall clock (to expire shard
// iterators, valid 300s, without waiting).
package kinesislocal

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

//go:embed preload.js
var preloadJS []byte

const (
	startTimeout  = 60 * time.Second // whole Start, unless ctx ends sooner
	startAttempts = 5                // port races (EADDRINUSE) are retried with new ports
	stopGrace     = 5 * time.Second  // SIGTERM -> SIGKILL
	listenMarker  = "gerritflow-kinesislocal: listening "
	clockMarker   = "gerritflow-kinesislocal: clock "
)

// Options configure Start.
type Options struct {
	// Dir is the deploy/local folder holding package.json and package-lock.json.
	// "" = found by walking up from the working directory to the folder holding
	// go.work, then deploy/local.
	Dir string
	// Streams are created at start (INITIALIZE_STREAMS), name -> shard count.
	Streams map[string]int
	// Log receives the emulator's stdout/stderr (and npm's output). nil = discarded.
	Log io.Writer
	// Env adds to or overrides the emulator's environment, e.g. LOG_LEVEL,
	// SPLIT_SHARD_DURATION, SHOULD_PERSIST_DATA + PERSIST_PATH for a dev runner
	// that keeps data across restarts. The ports and INITIALIZE_STREAMS are
	// always set by Start.
	Env map[string]string
}

// defaultEnv: every *_DURATION small (tests and dev both want fast state
// changes), no persistence.
var defaultEnv = map[string]string{
	"CREATE_STREAM_DURATION":              "50ms",
	"DELETE_STREAM_DURATION":              "50ms",
	"REGISTER_STREAM_CONSUMER_DURATION":   "50ms",
	"DEREGISTER_STREAM_CONSUMER_DURATION": "50ms",
	"START_STREAM_ENCRYPTION_DURATION":    "50ms",
	"STOP_STREAM_ENCRYPTION_DURATION":     "50ms",
	"MERGE_SHARDS_DURATION":               "50ms",
	"SPLIT_SHARD_DURATION":                "50ms",
	"UPDATE_SHARD_COUNT_DURATION":         "50ms",
	"UPDATE_STREAM_MODE_DURATION":         "50ms",
	"SHOULD_PERSIST_DATA":                 "false",
	"LOAD_DATA_IF_EXISTS":                 "false",
	"LOG_LEVEL":                           "WARN",
	"AWS_REGION":                          Region,
}

// Emulator is a running kinesis-mock process.
type Emulator struct {
	cmd      *exec.Cmd
	out      *output
	endpoint string
	client   *kinesis.Client
	tmpDir   string

	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error         // cmd.Wait's result, valid after exited

	stopOnce sync.Once
	stopErr  error

	clockMu     sync.Mutex
	clockOffset int64 // ms, see AdvanceClock
}

// Start installs the emulator if needed, starts it on free loopback ports and
// waits (up to 60s, or ctx) until it answers ListStreams and every stream in
// opts.Streams is ACTIVE.
func Start(ctx context.Context, opts Options) (*Emulator, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	dir := opts.Dir
	if dir == "" {
		d, err := defaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("kinesislocal: %w", err)
	}
	init, err := initializeStreams(opts.Streams)
	if err != nil {
		return nil, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("kinesislocal: node is not on PATH: %w", err)
	}
	if err := ensureInstalled(ctx, dir, opts.Log); err != nil {
		return nil, err
	}

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		e, err := startOnce(ctx, node, dir, init, opts)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// StartT starts an emulator for a test with the given streams, stops it in
// t.Cleanup, and fails the test if it cannot start. The emulator's output is
// kept in memory and its tail logged if the test failed.
func StartT(t testing.TB, streams map[string]int) *Emulator {
	t.Helper()
	e, err := Start(context.Background(), Options{Streams: streams})
	if err != nil {
		t.Fatalf("kinesislocal: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("kinesislocal: stop: %v", err)
		}
		if t.Failed() {
			t.Logf("kinesislocal: emulator output (tail):\n%s", e.out.tail())
		}
	})
	return e
}

var errPortInUse = errors.New("port in use")

func startOnce(ctx context.Context, node, dir, init string, opts Options) (_ *Emulator, err error) {
	plain, tls, err := pickPorts()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "kinesislocal-")
	if err != nil {
		return nil, fmt.Errorf("kinesislocal: %w", err)
	}
	preload := filepath.Join(tmp, "preload.js")
	if err := os.WriteFile(preload, preloadJS, 0o644); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kinesislocal: %w", err)
	}

	env := map[string]string{}
	for k, v := range defaultEnv {
		env[k] = v
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	env["KINESIS_MOCK_PLAIN_PORT"] = strconv.Itoa(plain)
	env["KINESIS_MOCK_TLS_PORT"] = strconv.Itoa(tls)
	if init != "" {
		env["INITIALIZE_STREAMS"] = init // "" is a config error for the emulator
	}
	if _, ok := env["GERRITFLOW_KINESIS_BIND"]; !ok {
		env["GERRITFLOW_KINESIS_BIND"] = "127.0.0.1"
	}
	env["GERRITFLOW_KINESIS_CLOCK_FILE"] = filepath.Join(tmp, "clock")
	var environ []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, override := env[k]; !override && k != "INITIALIZE_STREAMS" {
			environ = append(environ, kv)
		}
	}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}

	out := newOutput(opts.Log)
	cmd := exec.Command(node, "-r", preload, "main.js")
	cmd.Dir = packageDir(dir)
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group (Stop signals the group); SIGKILL if this process dies
	// without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	e := &Emulator{
		cmd:      cmd,
		out:      out,
		endpoint: "http://127.0.0.1:" + strconv.Itoa(plain),
		tmpDir:   tmp,
		exited:   make(chan struct{}),
	}
	// Pdeathsig fires when the OS thread that forked the child exits, so fork
	// from a goroutine locked to its thread that stays alive (in Wait) as long
	// as the child does.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		e.waitErr = cmd.Wait()
		close(e.exited)
	}()
	if err := <-started; err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kinesislocal: start node: %w", err)
	}
	defer func() {
		if err != nil {
			e.Stop() //nolint:errcheck
		}
	}()
	e.client, err = NewClient(ctx, Region, e.endpoint, credentials.NewStaticCredentialsProvider("local", "local", ""))
	if err != nil {
		return nil, err
	}

	// 1. Both ports bound by this process (the preload prints a marker line).
	if err := e.poll(ctx, 50*time.Millisecond, "bind its ports", func(context.Context) (bool, error) {
		return out.listening(plain) && out.listening(tls), nil
	}); err != nil {
		return nil, err
	}
	// 2. The API answers.
	if err := e.poll(ctx, 100*time.Millisecond, "answer ListStreams", func(ctx context.Context) (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := e.client.ListStreams(cctx, &kinesis.ListStreamsInput{}, noRetry)
		return err == nil, nil
	}); err != nil {
		return nil, err
	}
	// 3. The requested streams are ACTIVE.
	for _, name := range sortedNames(opts.Streams) {
		if err := e.waitActive(ctx, name); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func noRetry(o *kinesis.Options) { o.RetryMaxAttempts = 1 }

// poll calls cond every interval until it reports true, returns an error, the
// process exits or ctx ends.
func (e *Emulator) poll(ctx context.Context, interval time.Duration, what string, cond func(context.Context) (bool, error)) error {
	for {
		select {
		case <-e.exited:
			return e.diedError(what)
		default:
		}
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-e.exited:
			return e.diedError(what)
		case <-ctx.Done():
			return fmt.Errorf("kinesislocal: emulator (pid %d, %s) did not %s: %w\noutput (tail):\n%s",
				e.PID(), e.endpoint, what, ctx.Err(), e.out.tail())
		case <-time.After(interval):
		}
	}
}

func (e *Emulator) diedError(what string) error {
	log := e.out.tail()
	err := fmt.Errorf("kinesislocal: emulator exited (%v) before it could %s; output (tail):\n%s", e.waitErr, what, log)
	if bytes.Contains(log, []byte("EADDRINUSE")) {
		return fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return err
}

// waitActive polls DescribeStreamSummary until the stream is ACTIVE (a stream
// that does not exist yet is waited for too).
func (e *Emulator) waitActive(ctx context.Context, name string) error {
	var last string
	err := e.poll(ctx, 50*time.Millisecond, "make stream "+name+" ACTIVE", func(ctx context.Context) (bool, error) {
		out, err := e.client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			var nf *types.ResourceNotFoundException
			if errors.As(err, &nf) {
				last = "not found"
				return false, nil
			}
			return false, fmt.Errorf("kinesislocal: describe stream %s: %w", name, err)
		}
		last = string(out.StreamDescriptionSummary.StreamStatus)
		return out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive, nil
	})
	if err != nil && last != "" {
		return fmt.Errorf("%w (last status %s)", err, last)
	}
	return err
}

// Endpoint is the emulator's plain-HTTP URL, http://127.0.0.1:<port>.
func (e *Emulator) Endpoint() string { return e.endpoint }

// PID is the emulator's process id (also its process group id).
func (e *Emulator) PID() int { return e.cmd.Process.Pid }

// Client returns a Kinesis client for the emulator (region us-east-1, static
// credentials "local"/"local", see NewClient for retries).
func (e *Emulator) Client() *kinesis.Client { return e.client }

// CreateStream creates a provisioned stream and waits until it is ACTIVE.
func (e *Emulator) CreateStream(ctx context.Context, name string, shards int) error {
	if shards <= 0 {
		return fmt.Errorf("kinesislocal: stream %s: shard count %d must be positive", name, shards)
	}
	_, err := e.client.CreateStream(ctx, &kinesis.CreateStreamInput{
		StreamName: aws.String(name),
		ShardCount: aws.Int32(int32(shards)),
	})
	if err != nil {
		return fmt.Errorf("kinesislocal: create stream %s: %w", name, err)
	}
	return e.waitActive(ctx, name)
}

// AdvanceClock moves the emulator's wall clock forward by d (cumulative over
// calls; the process's monotonic timers are not affected). The emulator stamps
// shard iterators with its wall clock and rejects them after 300s with
// ExpiredIteratorException, so AdvanceClock(ctx, 301*time.Second) expires every
// iterator handed out so far. Arrival timestamps and sequence numbers of later
// records move forward too (retention trimming then applies as well).
func (e *Emulator) AdvanceClock(ctx context.Context, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("kinesislocal: AdvanceClock(%v): the clock only moves forward", d)
	}
	e.clockMu.Lock()
	defer e.clockMu.Unlock()
	want := e.clockOffset + d.Milliseconds()
	if err := os.WriteFile(filepath.Join(e.tmpDir, "clock"), []byte(strconv.FormatInt(want, 10)), 0o644); err != nil {
		return fmt.Errorf("kinesislocal: %w", err)
	}
	select {
	case <-e.exited:
		return e.diedError("advance its clock")
	default:
	}
	if err := syscall.Kill(e.PID(), syscall.SIGUSR2); err != nil {
		return fmt.Errorf("kinesislocal: signal emulator: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.poll(ctx, 10*time.Millisecond, "acknowledge its new clock", func(context.Context) (bool, error) {
		return e.out.clockOffset() == want, nil
	}); err != nil {
		return err
	}
	e.clockOffset = want
	return nil
}

// Stop sends SIGTERM to the emulator's process group, SIGKILL after 5s, and
// waits for the process to exit. It is idempotent. It returns an error only if
// the emulator had already died on its own.
func (e *Emulator) Stop() error {
	e.stopOnce.Do(func() {
		defer os.RemoveAll(e.tmpDir)
		pid := e.PID()
		select {
		case <-e.exited:
			if e.waitErr != nil {
				e.stopErr = fmt.Errorf("kinesislocal: emulator (pid %d) had exited: %v; output (tail):\n%s", pid, e.waitErr, e.out.tail())
			}
			return
		default:
		}
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(stopGrace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-e.exited
		}
	})
	return e.stopErr
}

// initializeStreams renders INITIALIZE_STREAMS ("a:2,b:1", sorted by name).
func initializeStreams(streams map[string]int) (string, error) {
	var parts []string
	for _, name := range sortedNames(streams) {
		n := streams[name]
		if !streamName.MatchString(name) {
			return "", fmt.Errorf("kinesislocal: invalid stream name %q", name)
		}
		if n <= 0 {
			return "", fmt.Errorf("kinesislocal: stream %s: shard count %d must be positive", name, n)
		}
		parts = append(parts, name+":"+strconv.Itoa(n))
	}
	return strings.Join(parts, ","), nil
}

var streamName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,128}$`)

func sortedNames(m map[string]int) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

var pickPorts = freePorts // replaced in tests

// freePorts picks two distinct free loopback ports. They are released before
// node binds them, so another process may grab one in between: Start then sees
// EADDRINUSE and retries with new ports.
func freePorts() (int, int, error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("kinesislocal: pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

// output collects the emulator's stdout/stderr: forwards it to the Log writer,
// keeps a tail for error messages and notes the listen markers of the preload.
type output struct {
	mu     sync.Mutex
	log    io.Writer
	buf    []byte // tail
	line   []byte // incomplete last line
	listen map[int]bool
	clock  int64 // last clock offset (ms) the preload acknowledged
}

const outputTail = 64 << 10

func newOutput(log io.Writer) *output { return &output{log: log, listen: map[int]bool{}} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = append(o.buf, p...)
	if len(o.buf) > 2*outputTail {
		o.buf = append([]byte(nil), o.buf[len(o.buf)-outputTail:]...)
	}
	o.line = append(o.line, p...)
	for {
		i := bytes.IndexByte(o.line, '\n')
		if i < 0 {
			break
		}
		l := o.line[:i]
		if j := bytes.Index(l, []byte(listenMarker)); j >= 0 {
			var a struct {
				Port int `json:"port"`
			}
			if json.Unmarshal(l[j+len(listenMarker):], &a) == nil {
				o.listen[a.Port] = true
			}
		}
		if j := bytes.Index(l, []byte(clockMarker)); j >= 0 {
			var c struct {
				Offset int64 `json:"offset"`
			}
			if json.Unmarshal(l[j+len(clockMarker):], &c) == nil {
				o.clock = c.Offset
			}
		}
		o.line = o.line[i+1:]
	}
	if len(o.line) > outputTail {
		o.line = o.line[len(o.line)-outputTail:]
	}
	if o.log != nil {
		o.log.Write(p) //nolint:errcheck // the emulator must not stall on a broken log
	}
	return len(p), nil
}

func (o *output) listening(port int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.listen[port]
}

func (o *output) clockOffset() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.clock
}

func (o *output) tail() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]byte(nil), tail(o.buf, outputTail)...)
}
