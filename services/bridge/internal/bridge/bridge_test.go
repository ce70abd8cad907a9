package bridge

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

func TestOneReplicaPublishesAndResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	e.putN(t, 0, 500)
	spans := tracetest.NewInMemoryExporter()
	r1 := e.start(t, "r1", testOptions(), nil, telemetry.WithSpanExporter(spans))
	waitCount(t, e.js, subject.Raw, 500, 30*time.Second)
	e.assertAllPublished(t)

	// Kinesis MillisBehindLatest: one gauge per shard held, 0 once caught up.
	for deadline := time.Now().Add(5 * time.Second); r1.metric(t, "millis_behind_latest") != 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // the next GetRecords of each shard says it caught up
	}
	if n, behind := r1.series(t, "millis_behind_latest"), r1.metric(t, "millis_behind_latest"); n != 2 || behind != 0 {
		t.Errorf("millis_behind_latest: %d series summing to %v; want one per shard (2), 0 once caught up", n, behind)
	}

	// Each record starts its own trace with a producer span.
	traces := map[string]tracetest.SpanStub{}
	for _, sp := range spans.GetSpans() {
		if sp.Name == "send "+subject.Raw {
			traces[sp.SpanContext.TraceID().String()] = sp
		}
	}
	if len(traces) < 500 {
		t.Errorf("%d traces of %q; want one per record (500)", len(traces), "send "+subject.Raw)
	}

	// Headers: exact names, lowercase traceparent, RFC 3339 arrival.
	_, msgs := rawByID(t, e.js, 1)
	h := msgs[0].Headers()
	if _, ok := h[bus.Traceparent]; !ok {
		t.Errorf("no lowercase %q header in %v", bus.Traceparent, h)
	}
	if _, err := time.Parse(time.RFC3339, h.Get(bus.KinesisArrival)); err != nil {
		t.Errorf("Kinesis-Arrival %q: %v", h.Get(bus.KinesisArrival), err)
	}
	if want := MsgID(testStream, h.Get(bus.KinesisShard), h.Get(bus.KinesisSequence), -1); h.Get(bus.MsgID) != want {
		t.Errorf("Nats-Msg-Id %q; want %q", h.Get(bus.MsgID), want)
	}

	// Graceful stop: last checkpoints written, leases released.
	r1.shutdown(t)
	shards := map[string]bool{}
	for _, p := range e.allPuts() {
		shards[p.shard] = true
	}
	for sh := range shards {
		if got, want := e.checkpoint(t, sh), e.lastSeq(sh); got != want {
			t.Errorf("checkpoint of %s = %q; want the last sequence %q", sh, got, want)
		}
	}
	leases, err := e.js.KeyValue(ctxT(t, 5*time.Second), "kinesis_leases")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := leases.ListKeys(ctxT(t, 5*time.Second)); err == nil {
		var left []string
		for k := range keys.Keys() {
			left = append(left, k)
		}
		if len(left) > 0 {
			t.Errorf("after a graceful stop the leases bucket still holds %v", left)
		}
	}

	byID, _ := rawByID(t, e.js, 500)
	for id, m := range byID {
		tp := m.Headers().Get(bus.Traceparent) // 00-<trace>-<span>-01
		parts := strings.Split(tp, "-")
		if len(parts) != 4 {
			t.Fatalf("message %s traceparent %q", id, tp)
		}
		sp, ok := traces[parts[1]]
		if !ok {
			t.Fatalf("message %s traceparent %q names no span of the bridge", id, tp)
		}
		attrs := map[string]string{}
		for _, a := range sp.Attributes {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if sp.SpanKind != trace.SpanKindProducer || sp.Parent.IsValid() || sp.SpanContext.SpanID().String() != parts[2] ||
			attrs["messaging.message.id"] != id || attrs["messaging.system"] != "nats" || attrs["messaging.destination.name"] != subject.Raw ||
			attrs[string(attrArrival)] == "" {
			t.Errorf("span of %s: kind %v parent %v attrs %v; want a root producer span with the messaging and arrival attributes", id, sp.SpanKind, sp.Parent, attrs)
		}
		break // one is enough for the attributes; the count above covers the rest
	}

	// Restart: nothing is read again.
	r2 := e.start(t, "r2", testOptions(), nil)
	deadline := time.Now().Add(10 * time.Second)
	for r2.metric(t, "leases_held") < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a few polls
	if n := r2.metric(t, "records_in_total"); n != 0 {
		t.Errorf("restarted replica read %v records; want 0 (resume after the checkpoints)", n)
	}
	if n := rawCount(t, e.js); n != 500 {
		t.Errorf("after restart %s holds %d; want 500", subject.Raw, n)
	}
	e.putN(t, 500, 100)
	waitCount(t, e.js, subject.Raw, 600, 30*time.Second)
	e.assertAllPublished(t)
	if n := r2.metric(t, "records_in_total"); n != 100 {
		t.Errorf("restarted replica read %v records; want 100", n)
	}
	if n := r2.metric(t, "puback_duplicates_total"); n != 0 {
		t.Errorf("restarted replica got %v duplicate PubAcks; want 0", n)
	}

	// Checkpoints lost (say, the bucket was recreated): everything is read
	// again, every PubAck is a duplicate, which counts as success, and the
	// checkpoints move on to the end.
	r2.shutdown(t)
	cps, err := e.js.KeyValue(ctxT(t, 5*time.Second), "kinesis_checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	for sh := range shards {
		if err := cps.Purge(ctxT(t, 5*time.Second), subject.ShardKey(testStream, sh)); err != nil {
			t.Fatal(err)
		}
	}
	r3 := e.start(t, "r3", testOptions(), nil)
	waitMetric(t, r3, "puback_duplicates_total", 600, 30*time.Second)
	if n := rawCount(t, e.js); n != 600 {
		t.Errorf("after re-reading everything %s holds %d; want 600", subject.Raw, n)
	}
	for sh := range shards {
		deadline := time.Now().Add(10 * time.Second)
		for e.checkpoint(t, sh) != e.lastSeq(sh) {
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint of %s = %q after the duplicates; want %q", sh, e.checkpoint(t, sh), e.lastSeq(sh))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func rawCount(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "GERRIT_RAW")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return int(info.State.Msgs)
}

func TestThreeReplicasShareShardsAndTakeOverAKilledOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 4)
	opts := testOptions()
	// r1 starts alone and takes every shard; r2 and r3 join, and r1 gives
	// shards up (after checkpointing) until the three hold 2/1/1.
	reps := map[string]*replica{"r1": e.start(t, "r1", opts, nil)}
	e.putN(t, 0, 100)
	waitMetric(t, reps["r1"], "leases_held", 4, 20*time.Second)
	for _, name := range []string{"r2", "r3"} {
		reps[name] = e.start(t, name, opts, nil)
	}
	// Wait until the 4 shards are spread 2/1/1.
	deadline := time.Now().Add(20 * time.Second)
	for {
		held := map[string]float64{}
		total := 0.0
		for n, r := range reps {
			held[n] = r.metric(t, "leases_held")
			total += held[n]
		}
		if total == 4 && held["r1"] <= 2 && held["r2"] <= 2 && held["r3"] <= 2 && held["r1"] >= 1 && held["r2"] >= 1 && held["r3"] >= 1 {
			t.Logf("leases held: %v", held)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leases never spread over three replicas: %v", held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Records keep arriving; r2 is killed in the middle of the stream.
	victim := reps["r2"]
	var victimShards []string
	var killedAt time.Time
	for batch := 1; batch < 30; batch++ {
		e.putN(t, batch*100, 100)
		if batch == 12 {
			victimShards = e.log.readingNow("r2")
			if len(victimShards) == 0 {
				t.Fatalf("r2 reads no shard; intervals %v", e.log.snapshot())
			}
			killedAt = time.Now()
			victim.kill(t)
			t.Logf("killed r2 (reading %v, %v records read) at %s", victimShards, victim.metric(t, "records_in_total"), killedAt.Format("15:04:05.000"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitCount(t, e.js, subject.Raw, 3000, 60*time.Second)
	e.assertAllPublished(t)
	e.log.assertNoOverlap(t)

	// The survivors took r2's shards over within two TTLs.
	for _, sh := range victimShards {
		var first time.Time
		for _, iv := range e.log.snapshot() {
			if iv.shard == sh && iv.replica != "r2" && iv.from.After(killedAt) && (first.IsZero() || iv.from.Before(first)) {
				first = iv.from
			}
		}
		if first.IsZero() {
			t.Errorf("nobody took shard %s over after r2 was killed", sh)
			continue
		}
		took := first.Sub(killedAt)
		t.Logf("shard %s taken over %v after the kill", sh, took.Round(time.Millisecond))
		if took > 2*opts.LeaseTTL {
			t.Errorf("shard %s taken over %v after the kill; want within two TTLs (%v)", sh, took, 2*opts.LeaseTTL)
		}
	}
	dups := 0.0
	for n, r := range reps {
		if n != "r2" {
			dups += r.metric(t, "puback_duplicates_total")
		}
	}
	t.Logf("duplicate PubAcks after the takeover: %v", dups)
	if n := reps["r1"].metric(t, "leases_held"); n != 2 {
		t.Errorf("r1 holds %v leases after r2 died; want 2 of the 4", n)
	}
}

func TestReshardReadsParentThenChildren(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	opts := testOptions()
	r := e.start(t, "r1", opts, nil)
	e.putN(t, 0, 300)
	ctx := ctxT(t, 30*time.Second)
	c := e.kin.Client()
	ls, err := c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(testStream)})
	if err != nil {
		t.Fatal(err)
	}
	parent := ls.Shards[0]
	lo, _ := new(big.Int).SetString(aws.ToString(parent.HashKeyRange.StartingHashKey), 10)
	hi, _ := new(big.Int).SetString(aws.ToString(parent.HashKeyRange.EndingHashKey), 10)
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1)
	if _, err := c.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(testStream),
		ShardToSplit: parent.ShardId, NewStartingHashKey: aws.String(mid.String())}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	// Wait for the children, then write into them.
	for {
		ls, err = c.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(testStream)})
		if err == nil && len(ls.Shards) == 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.putN(t, 300, 300)
	waitCount(t, e.js, subject.Raw, 600, 30*time.Second)
	e.assertAllPublished(t)

	parentID := aws.ToString(parent.ShardId)
	if cp := e.checkpoint(t, parentID); cp != ShardEnd {
		t.Errorf("parent checkpoint = %q; want %s", cp, ShardEnd)
	}
	// The parent's reading ended before either child's began.
	var parentEnd time.Time
	children := map[string]time.Time{}
	for _, iv := range e.log.snapshot() {
		if iv.shard == parentID {
			if iv.to.After(parentEnd) {
				parentEnd = iv.to
			}
		} else if _, ok := children[iv.shard]; !ok {
			children[iv.shard] = iv.from
		}
	}
	if len(children) != 2 {
		t.Fatalf("children read: %v; want 2", children)
	}
	for ch, from := range children {
		if !from.After(parentEnd) {
			t.Errorf("child %s read from %s, before the parent's end %s", ch, from.Format("15:04:05.000"), parentEnd.Format("15:04:05.000"))
		}
	}
	// And in the stream, every parent record precedes every child record.
	_, msgs := rawByID(t, e.js, 600)
	seenChild := false
	for _, m := range msgs {
		if m.Headers().Get(bus.KinesisShard) == parentID {
			if seenChild {
				t.Fatalf("a parent record follows a child record in %s", subject.Raw)
			}
		} else {
			seenChild = true
		}
	}
	if n := r.metric(t, "leases_held"); n != 2 {
		t.Errorf("leases held after the split = %v; want the 2 children", n)
	}
	// The parent is still listed (retention): its SHARD_END stays.
	if n := r.metric(t, "trimmed_checkpoints_deleted_total"); n != 0 {
		t.Errorf("trimmed checkpoints deleted = %v; want 0 while the parent is listed", n)
	}
}

// TestCheckpointsOfTrimmedShardsAreDeleted: a SHARD_END checkpoint of a shard
// Kinesis no longer lists (dropped after the retention period) is deleted;
// an unfinished one of an unlisted shard, the checkpoints of listed shards
// and those of another stream are kept.
func TestCheckpointsOfTrimmedShardsAreDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	ctx := ctxT(t, 30*time.Second)
	kv, err := e.js.KeyValue(ctx, streams.BucketCheckpoints)
	if err != nil {
		t.Fatal(err)
	}
	const trimmed, unfinished = "shardId-000000000097", "shardId-000000000098"
	otherStream := subject.ShardKey("other-stream", trimmed)
	for key, value := range map[string]string{
		subject.ShardKey(testStream, trimmed):    ShardEnd,
		subject.ShardKey(testStream, unfinished): "49590338271490256608559692538361571095921575989136588898",
		otherStream:                              ShardEnd,
	} {
		if _, err := kv.Create(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	r := e.start(t, "r1", testOptions(), nil)
	e.putN(t, 0, 20)
	waitCount(t, e.js, subject.Raw, 20, 30*time.Second)
	waitMetric(t, r, "trimmed_checkpoints_deleted_total", 1, 15*time.Second)

	if cp := e.checkpoint(t, trimmed); cp != "" {
		t.Errorf("checkpoint of the trimmed shard = %q; want it deleted", cp)
	}
	if cp := e.checkpoint(t, unfinished); cp == "" {
		t.Error("the unfinished checkpoint of an unlisted shard was deleted")
	}
	if _, err := kv.Get(ctx, otherStream); err != nil {
		t.Errorf("another stream's checkpoint: %v; want it kept", err)
	}
	shard := e.allPuts()[0].shard
	eventually := time.Now().Add(15 * time.Second)
	for e.checkpoint(t, shard) != e.lastSeq(shard) {
		if time.Now().After(eventually) {
			t.Fatalf("checkpoint of the listed shard %s = %q; want %s", shard, e.checkpoint(t, shard), e.lastSeq(shard))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExpiredIteratorResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	r := e.start(t, "r1", testOptions(), nil)
	e.putN(t, 0, 100)
	waitCount(t, e.js, subject.Raw, 100, 30*time.Second)
	if err := e.kin.AdvanceClock(ctxT(t, 10*time.Second), 301*time.Second); err != nil {
		t.Fatal(err)
	}
	e.putN(t, 100, 100)
	waitCount(t, e.js, subject.Raw, 200, 30*time.Second)
	e.assertAllPublished(t)
	if n := r.metric(t, "kinesis_errors_total", "kind", "expired_iterator"); n < 1 {
		t.Errorf("expired iterators seen = %v; want at least 1 (the clock moved 301s)", n)
	}
	if n := r.metric(t, "records_in_total"); n != 200 {
		t.Errorf("records read = %v; want 200 (resumed after the checkpoint, nothing re-read)", n)
	}
}

func TestRejectedCheckpointFallsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	e.putN(t, 0, 50)
	shard := e.allPuts()[0].shard
	kv, err := e.js.KeyValue(ctxT(t, 5*time.Second), "kinesis_checkpoints")
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint the stream does not know (e.g. trimmed long ago).
	if _, err := kv.Create(ctxT(t, 5*time.Second), subject.ShardKey(testStream, shard), []byte("1")); err != nil {
		t.Fatal(err)
	}
	r := e.start(t, "r1", testOptions(), nil) // start: trim_horizon
	waitCount(t, e.js, subject.Raw, 50, 30*time.Second)
	e.assertAllPublished(t)
	if n := r.metric(t, "iterator_fallbacks_total"); n != 1 {
		t.Errorf("iterator fallbacks = %v; want 1", n)
	}
}

// throttler forwards Kinesis API calls to the emulator and answers
// GetRecords with ProvisionedThroughputExceededException while on.
type throttler struct {
	mu    sync.Mutex
	on    bool
	total int
	calls []time.Time
}

func (th *throttler) set(on bool) {
	th.mu.Lock()
	th.on = on
	th.mu.Unlock()
}

func (th *throttler) count() (int, []time.Time) {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.total, append([]time.Time(nil), th.calls...)
}

func startThrottler(t *testing.T, target string) (*throttler, string) {
	th := &throttler{}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".GetRecords") {
			th.mu.Lock()
			on := th.on
			if on {
				th.total++
				th.calls = append(th.calls, time.Now())
			}
			th.mu.Unlock()
			if on {
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard in stream gerrit-events"}`)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return th, srv.URL
}

func TestThrottlingBacksOffAndDeliversEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	th, proxyURL := startThrottler(t, e.kin.Endpoint())
	kc, err := kinesislocal.NewClient(context.Background(), kinesislocal.Region, proxyURL, credentials.NewStaticCredentialsProvider("local", "local", ""))
	if err != nil {
		t.Fatal(err)
	}
	th.set(true)
	e.putN(t, 0, 200)
	r := e.start(t, "r1", testOptions(), kc)
	const window = 3 * time.Second
	time.Sleep(window)
	th.set(false)
	waitCount(t, e.js, subject.Raw, 200, 30*time.Second)
	e.assertAllPublished(t)
	n, calls := th.count()
	t.Logf("%d GetRecords calls throttled in %v", n, window)
	if n < 2 {
		t.Fatalf("only %d GetRecords calls were throttled; the test did not throttle", n)
	}
	// The 5/s limiter alone would allow ~15 calls in the window; backoff
	// (200ms doubling, ±50%%) allows about 5.
	if n > 8 {
		t.Errorf("%d GetRecords calls in a %v throttling window (at %v); want backoff (at most 8)", n, window, calls)
	}
	if got := r.metric(t, "kinesis_errors_total", "kind", "throttled"); int(got) != n {
		t.Errorf("throttled metric = %v; want %d", got, n)
	}
}

func TestDeadLettersAndKPLAggregates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	opts := testOptions()
	opts.MaxPayload = 2048 // the check a NATS server with max_payload 2 KiB would impose
	agg := aggregate([]string{"patchset-created", "comment-added"}, nil, []kplRec{
		{0, -1, `{"type":"patchset-created","n":"a"}`, false},
		{1, -1, `{"type":"comment-added","n":"b"}`, false},
		{0, -1, `{"type":"patchset-created","n":"c"}`, false},
	})
	badAgg := append([]byte(nil), agg...)
	badAgg[len(badAgg)-1] ^= 0xFF
	big := []byte(`{"type":"patchset-created","big":"` + strings.Repeat("x", 4000) + `"}`)
	datas := [][]byte{[]byte(`{"n":1}`), big, []byte(`{"n":2}`), agg, badAgg, []byte(`{"n":3}`)}
	e.putData(t, datas, func(i int) string { return "pk" })
	r := e.start(t, "r1", opts, nil)

	waitCount(t, e.js, subject.DLQ("bridge"), 2, 30*time.Second)
	waitCount(t, e.js, subject.Raw, 6, 30*time.Second)
	puts := e.allPuts()
	byID, _ := rawByID(t, e.js, 6)
	for _, i := range []int{0, 2, 5} {
		id := MsgID(testStream, puts[i].shard, puts[i].seq, -1)
		if m, ok := byID[id]; !ok || string(m.Data()) != string(datas[i]) {
			t.Errorf("record %d (%s) not published as it was", i, id)
		}
	}
	for sub, want := range []struct{ pk, data string }{
		{"patchset-created", `{"type":"patchset-created","n":"a"}`},
		{"comment-added", `{"type":"comment-added","n":"b"}`},
		{"patchset-created", `{"type":"patchset-created","n":"c"}`},
	} {
		id := MsgID(testStream, puts[3].shard, puts[3].seq, sub)
		m, ok := byID[id]
		if !ok {
			t.Errorf("user record %d of the aggregate (%s) missing", sub, id)
			continue
		}
		if string(m.Data()) != want.data || m.Headers().Get(bus.KinesisPartition) != want.pk ||
			m.Headers().Get(HeaderSubsequence) != strconv.Itoa(sub) || m.Headers().Get(bus.KinesisSequence) != puts[3].seq {
			t.Errorf("user record %s = %q headers %v; want %q with partition key %s", id, m.Data(), m.Headers(), want.data, want.pk)
		}
	}
	dlq := natstest.Collect(t, e.js, subject.DLQ("bridge"), 2, 10*time.Second)
	reasons := map[string]string{} // sequence -> reason
	for _, m := range dlq {
		h := m.Headers()
		reasons[h.Get(bus.KinesisSequence)] = h.Get(bus.Error)
		if h.Get(bus.KinesisStream) != testStream || h.Get(bus.KinesisShard) != puts[0].shard || h.Get(bus.Traceparent) == "" {
			t.Errorf("dead letter headers %v lack the Kinesis or trace headers", h)
		}
		if len(m.Data()) > opts.MaxPayload {
			t.Errorf("dead letter of %d bytes; want it truncated to fit %d", len(m.Data()), opts.MaxPayload)
		}
	}
	if reason := reasons[puts[1].seq]; !strings.Contains(reason, "max payload") {
		t.Errorf("oversized record's dead letter reason %q; want one naming the max payload", reason)
	}
	if reason := reasons[puts[4].seq]; !strings.Contains(reason, "MD5") {
		t.Errorf("bad aggregate's dead letter reason %q; want one naming the MD5 digest", reason)
	}
	// The shard did not stall: the checkpoint reached the last record.
	deadline := time.Now().Add(10 * time.Second)
	for e.checkpoint(t, puts[5].shard) != puts[5].seq {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %q; want the last record %s", e.checkpoint(t, puts[5].shard), puts[5].seq)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := r.metric(t, "dlq_total"); n != 2 {
		t.Errorf("dlq_total = %v; want 2", n)
	}
}

func TestLostRenewalStopsReadingAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	opts := testOptions()
	r := e.start(t, "r1", opts, nil)
	e.putN(t, 0, 50)
	waitCount(t, e.js, subject.Raw, 50, 30*time.Second)
	shard := e.allPuts()[0].shard
	if got := e.log.readingNow("r1"); len(got) != 1 {
		t.Fatalf("r1 reads %v; want [%s]", got, shard)
	}
	// Another replica takes the lease (as if r1's had expired).
	leases, err := e.js.KeyValue(ctxT(t, 5*time.Second), "kinesis_leases")
	if err != nil {
		t.Fatal(err)
	}
	key := subject.ShardKey(testStream, shard)
	en, err := leases.Get(ctxT(t, 5*time.Second), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Update(ctxT(t, 5*time.Second), key, []byte(`{"owner":"intruder"}`), en.Revision()); err != nil {
		t.Fatal(err)
	}
	stolenAt := time.Now()
	deadline := stolenAt.Add(opts.LeaseTTL)
	for len(e.log.readingNow("r1")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("r1 still reads %s %v after its lease was taken", shard, opts.LeaseTTL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("r1 stopped reading %v after its lease was taken", time.Since(stolenAt).Round(time.Millisecond))
	if n := r.metric(t, "leases_lost_total"); n != 1 {
		t.Errorf("leases_lost_total = %v; want 1", n)
	}
	// The intruder never renews: r1 takes the shard back after the TTL and
	// goes on from its checkpoint.
	e.putN(t, 50, 50)
	waitCount(t, e.js, subject.Raw, 100, 30*time.Second)
	e.assertAllPublished(t)
	if n := r.metric(t, "records_in_total"); n != 100 {
		t.Errorf("records read = %v; want 100", n)
	}
}
