package bridge

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

const testStream = "gerrit-events"

// env is one emulator with one stream and one provisioned NATS server.
type env struct {
	kin *kinesislocal.Emulator
	srv *natstest.Server
	js  jetstream.JetStream

	mu   sync.Mutex
	puts []put // every record put, in order
	log  *intervals
}

type put struct {
	shard, seq, pk string
	data           []byte
}

func newEnv(t *testing.T, shards int) *env {
	t.Helper()
	e := &env{log: &intervals{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.srv, e.js = natstest.JetStream(t) }()
	e.kin = kinesislocal.StartT(t, map[string]int{testStream: shards})
	wg.Wait()
	return e
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// putN puts n records numbered from..from+n-1 with PutRecords (500 a call).
func (e *env) putN(t *testing.T, from, n int) {
	t.Helper()
	var datas [][]byte
	for i := from; i < from+n; i++ {
		datas = append(datas, []byte(fmt.Sprintf(`{"type":"patchset-created","n":%d}`, i)))
	}
	e.putData(t, datas, func(i int) string { return fmt.Sprintf("pk-%d", from+i) })
}

func (e *env) putData(t *testing.T, datas [][]byte, pk func(int) string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	for start := 0; start < len(datas); start += 500 {
		end := min(start+500, len(datas))
		var entries []types.PutRecordsRequestEntry
		for i := start; i < end; i++ {
			entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(pk(i)), Data: datas[i]})
		}
		out, err := e.kin.Client().PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(testStream), Records: entries})
		if err != nil {
			t.Fatalf("PutRecords: %v", err)
		}
		if aws.ToInt32(out.FailedRecordCount) != 0 {
			t.Fatalf("PutRecords: %d failed", aws.ToInt32(out.FailedRecordCount))
		}
		e.mu.Lock()
		for i, r := range out.Records {
			e.puts = append(e.puts, put{shard: aws.ToString(r.ShardId), seq: aws.ToString(r.SequenceNumber), pk: pk(start + i), data: datas[start+i]})
		}
		e.mu.Unlock()
	}
}

func (e *env) allPuts() []put {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]put(nil), e.puts...)
}

// replica is one running bridge.
type replica struct {
	b    *Bridge
	tel  *telemetry.Telemetry
	stop context.CancelFunc
	done chan error
}

func testOptions() Options {
	return Options{
		Stream:       testStream,
		Start:        Start{Type: "trim_horizon"},
		PollInterval: 100 * time.Millisecond,
		LeaseTTL:     2 * time.Second,
		ListInterval: time.Second,
		DrainTimeout: 10 * time.Second,
	}
}

// start runs a replica until the test ends (graceful stop at cleanup).
func (e *env) start(t *testing.T, name string, opts Options, kc Kinesis, topts ...telemetry.Option) *replica {
	t.Helper()
	var logOut io.Writer = io.Discard
	if os.Getenv("BRIDGE_TEST_LOG") != "" {
		logOut = t.Output()
	}
	tel, err := telemetry.Start(context.Background(), "bridge", config.Otel{}, "", append(topts, telemetry.WithLogOutput(logOut))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	if kc == nil {
		kc = e.kin.Client()
	}
	opts.ReplicaID = name
	ctx := ctxT(t, 30*time.Second)
	b, err := New(ctx, e.js, kc, opts, tel)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b.onReading = func(shard string, on bool) { e.log.note(name, shard, on) }
	runCtx, cancel := context.WithCancel(context.Background())
	r := &replica{b: b, tel: tel, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(runCtx) }()
	t.Cleanup(func() { r.shutdown(t) })
	return r
}

// shutdown stops gracefully and waits (idempotent).
func (r *replica) shutdown(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run = %v; want nil", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("Run did not return 40s after cancel")
	}
}

// kill stops the replica as kill -9 would, and waits until it stopped.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	r.b.Kill()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run after Kill = %v", err)
		}
		close(r.done)
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not return 20s after Kill")
	}
}

// metric sums every series of gerritflow_bridge_<name> (with label=value if given).
func (r *replica) metric(t *testing.T, name string, label ...string) float64 {
	t.Helper()
	mfs, err := r.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "gerritflow_bridge_"+name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(label); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[i] && lp.GetValue() == label[i+1] {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// series counts the series of gerritflow_bridge_<name>.
func (r *replica) series(t *testing.T, name string) int {
	t.Helper()
	mfs, err := r.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "gerritflow_bridge_"+name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// intervals records, per shard, when each replica was reading it.
type intervals struct {
	mu   sync.Mutex
	open map[[2]string]time.Time
	all  []interval
}

type interval struct {
	replica, shard string
	from, to       time.Time
}

func (l *intervals) note(replica, shard string, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = map[[2]string]time.Time{}
	}
	k := [2]string{replica, shard}
	if on {
		l.open[k] = time.Now()
		return
	}
	l.all = append(l.all, interval{replica: replica, shard: shard, from: l.open[k], to: time.Now()})
	delete(l.open, k)
}

// closed returns the finished intervals plus the open ones (ending now).
func (l *intervals) snapshot() []interval {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]interval(nil), l.all...)
	for k, from := range l.open {
		out = append(out, interval{replica: k[0], shard: k[1], from: from, to: time.Now()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].from.Before(out[j].from) })
	return out
}

// assertNoOverlap fails if two replicas read one shard at the same time.
func (l *intervals) assertNoOverlap(t *testing.T) {
	t.Helper()
	all := l.snapshot()
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.shard == b.shard && a.replica != b.replica && a.from.Before(b.to) && b.from.Before(a.to) {
				t.Errorf("shard %s read by %s [%s, %s] and %s [%s, %s] at once", a.shard,
					a.replica, a.from.Format("15:04:05.000"), a.to.Format("15:04:05.000"),
					b.replica, b.from.Format("15:04:05.000"), b.to.Format("15:04:05.000"))
			}
		}
	}
}

// waitCount waits until subj holds n messages (and fails if it holds more).
func waitCount(t *testing.T, js jetstream.JetStream, subj string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := natstest.Count(t, js, subj)
		if got == n {
			return
		}
		if got > n {
			t.Fatalf("%s holds %d messages; want %d", subj, got, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d messages after %v; want %d", subj, got, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawByID reads every gerrit.raw message, by Nats-Msg-Id, failing on a repeated id.
func rawByID(t *testing.T, js jetstream.JetStream, n int) (map[string]jetstream.Msg, []jetstream.Msg) {
	t.Helper()
	msgs := natstest.Collect(t, js, subject.Raw, n, 20*time.Second)
	byID := map[string]jetstream.Msg{}
	for _, m := range msgs {
		id := m.Headers().Get(bus.MsgID)
		if _, dup := byID[id]; dup {
			t.Errorf("message id %s stored twice", id)
		}
		byID[id] = m
	}
	return byID, msgs
}

// assertAllPublished checks that every record put is on gerrit.raw once,
// with its exact bytes and headers.
func (e *env) assertAllPublished(t *testing.T) {
	t.Helper()
	puts := e.allPuts()
	byID, _ := rawByID(t, e.js, len(puts))
	bad := 0
	for _, p := range puts {
		id := MsgID(testStream, p.shard, p.seq, -1)
		m, ok := byID[id]
		if !ok {
			t.Errorf("record %s (%s) missing from %s", id, p.data, subject.Raw)
			bad++
		} else if string(m.Data()) != string(p.data) {
			t.Errorf("message %s data %q; want %q", id, m.Data(), p.data)
			bad++
		} else if h := m.Headers(); h.Get(bus.KinesisShard) != p.shard || h.Get(bus.KinesisSequence) != p.seq ||
			h.Get(bus.KinesisPartition) != p.pk || h.Get(bus.KinesisStream) != testStream {
			t.Errorf("message %s headers %v", id, h)
			bad++
		}
		if bad > 5 {
			t.Fatalf("too many bad messages")
		}
	}
}

func (e *env) checkpoint(t *testing.T, shard string) string {
	t.Helper()
	kv, err := e.js.KeyValue(ctxT(t, 5*time.Second), "kinesis_checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	en, err := kv.Get(ctxT(t, 5*time.Second), subject.ShardKey(testStream, shard))
	if err != nil {
		return ""
	}
	return string(en.Value())
}

func (e *env) lastSeq(shard string) string {
	last := ""
	for _, p := range e.allPuts() {
		if p.shard == shard && seqLess(last, p.seq) {
			last = p.seq
		}
	}
	return last
}

// readingNow lists the shards replica reads at this moment.
func (l *intervals) readingNow(replica string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range l.open {
		if k[0] == replica {
			out = append(out, k[1])
		}
	}
	sort.Strings(out)
	return out
}

// waitMetric waits until r's metric reaches want.
func waitMetric(t *testing.T, r *replica, name string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.metric(t, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v; want %v", name, r.metric(t, name), timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
