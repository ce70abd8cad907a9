package bridge

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Sizes of BenchmarkBridgeThroughput; BRIDGE_BENCH_RECORDS,
// BRIDGE_BENCH_SHARDS and BRIDGE_BENCH_RAW_LIMIT override the first three
// (for experiments and profiling runs).
const (
	benchRecords    = 20000
	benchShards     = 2
	benchRecordSize = 400
	benchRawLimit   = 10000  // GetRecords Limit of the raw loop
	benchMemRecords = 100000 // records of the publish-path phase (from memory)
)

// BenchmarkBridgeThroughput compares, in one run against one emulator holding
// the same records, the Kinesis emulator's raw GetRecords rate with the
// bridge's rate into a file-store JetStream stream (make bench-bridge).
//
//   - put: N gerrit-like JSON records of ~400 B, PutRecords of 500;
//   - raw: one plain GetRecords loop per shard (Limit 10000) from
//     TRIM_HORIZON until it has read every record of its shard, untimed once
//     to warm the emulator up, then timed before and after the bridge phase
//     (raw_rps is the mean of the two: the bridge phase sits between them on
//     a noisy machine);
//   - bridge: one replica in-process with start trim_horizon and otherwise
//     its defaults, timed from Run until gerrit.raw holds N messages.
//
// CPU: the Go process's rusage over the bridge phase is the bridge plus the
// embedded nats-server (and this loop's stream-info polls); the emulator is
// a separate node process, read from /proc/<pid>/stat. The last output line
// is "bridge_rps=<x> raw_rps=<y> ratio=<x/y>".
func BenchmarkBridgeThroughput(b *testing.B) {
	n := envInt("BRIDGE_BENCH_RECORDS", benchRecords)
	shards := envInt("BRIDGE_BENCH_SHARDS", benchShards)
	var r bridgeBench
	for i := 0; i < b.N; i++ {
		r = runBridgeBench(b, n, shards)
	}
	raw := (r.raw1 + r.raw2) / 2
	bridge := perSec(n, r.emu.wall)
	ratio := bridge / raw
	b.ReportMetric(bridge, "bridge_rec/s")
	b.ReportMetric(raw, "raw_rec/s")
	b.ReportMetric(ratio, "ratio")
	fmt.Printf("records=%d shards=%d size=%dB put_s=%.1f raw_before=%.0f raw_after=%.0f GOMAXPROCS=%d\n",
		n, shards, benchRecordSize, r.put.Seconds(), r.raw1, r.raw2, runtime.GOMAXPROCS(0))
	fmt.Printf("bridge from the emulator: %.0f rec/s in %.2fs; go process (bridge + embedded nats-server) %.2f cores, %.0f us/record; emulator (node) %.2f cores\n",
		bridge, r.emu.wall.Seconds(), r.emu.cores(), r.emu.perRecord(n), float64(r.emu.other)/float64(r.emu.wall))
	fmt.Printf("bridge from memory (publish-path ceiling, GetRecords Limit 10000, no HTTP): %.0f rec/s in %.2fs; go process %.2f cores, %.0f us/record\n",
		perSec(benchMemRecords, r.mem.wall), r.mem.wall.Seconds(), r.mem.cores(), r.mem.perRecord(benchMemRecords))
	fmt.Printf("bridge_rps=%.0f raw_rps=%.0f ratio=%.2f\n", bridge, raw, ratio)
}

type bridgeBench struct {
	put        time.Duration
	raw1, raw2 float64 // records/s
	emu, mem   phase   // the bridge reading the emulator, and reading memory
}

// phase is one timed bridge run: wall time, this process's CPU time, and
// the emulator's.
type phase struct{ wall, cpu, other time.Duration }

func (p phase) cores() float64 { return float64(p.cpu) / float64(p.wall) }
func (p phase) perRecord(n int) float64 {
	return float64(p.cpu.Microseconds()) / float64(n)
}

func perSec(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func runBridgeBench(b *testing.B, n, shards int) bridgeBench {
	b.Helper()
	var (
		kin *kinesislocal.Emulator
		js  jetstream.JetStream
		wg  sync.WaitGroup
		r   bridgeBench
	)
	wg.Go(func() { _, js = natstest.JetStream(b) })
	kin = kinesislocal.StartT(b, map[string]int{testStream: shards})
	wg.Wait()
	t0 := time.Now()
	perShard := putBench(b, kin, n)
	r.put = time.Since(t0)

	rawRead(b, kin.Client(), perShard) // warm-up, untimed
	d, _ := rawRead(b, kin.Client(), perShard)
	r.raw1 = perSec(n, d)
	r.emu = timeBridge(b, js, kin.Client(), Options{Stream: testStream}, n, kin.PID())
	d, _ = rawRead(b, kin.Client(), perShard)
	r.raw2 = perSec(n, d)

	// The publish path alone: records from memory, under another stream name
	// (new Msg-Ids), GetRecords Limit 10000 so that reading never waits.
	r.mem = timeBridge(b, js, newMemKinesis(shards, benchMemRecords), Options{Stream: testStream + "-mem", BatchLimit: benchRawLimit}, n+benchMemRecords, kin.PID())
	return r
}

// BenchmarkBridgePublish is the bridge's publish path alone, for profiling
// (go test -bench BridgePublish -benchtime 1x -cpuprofile ...): one replica
// reads benchMemRecords records from memory (two shards) into gerrit.raw.
func BenchmarkBridgePublish(b *testing.B) {
	var p phase
	for i := 0; i < b.N; i++ {
		_, js := natstest.JetStream(b)
		p = timeBridge(b, js, newMemKinesis(benchShards, benchMemRecords), Options{Stream: testStream, BatchLimit: benchRawLimit}, benchMemRecords, 0)
	}
	b.ReportMetric(perSec(benchMemRecords, p.wall), "rec/s")
	b.ReportMetric(p.cores(), "cores")
	fmt.Printf("publish_rps=%.0f cores=%.2f us_per_record=%.1f\n", perSec(benchMemRecords, p.wall), p.cores(), p.perRecord(benchMemRecords))
}

// timeBridge runs one replica (start trim_horizon) until gerrit.raw holds
// total messages, and stops it gracefully.
func timeBridge(b *testing.B, js jetstream.JetStream, kc Kinesis, opts Options, total, emuPID int) phase {
	b.Helper()
	tel, err := telemetry.Start(context.Background(), "bridge", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts.Start, opts.ReplicaID = Start{Type: "trim_horizon"}, "bench-"+opts.Stream
	br, err := New(ctx, js, kc, opts, tel)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := js.Stream(ctx, streams.GerritRaw)
	if err != nil {
		b.Fatal(err)
	}
	cpu0, emu0 := processCPU(b), emulatorCPU(b, emuPID)
	start := time.Now()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(runCtx) }()
	for {
		info, err := raw.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if int(info.State.Msgs) >= total {
			if int(info.State.Msgs) > total {
				b.Fatalf("gerrit.raw holds %d messages; want %d", info.State.Msgs, total)
			}
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("gerrit.raw holds %d of %d messages after 5 minutes", info.State.Msgs, total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := phase{wall: time.Since(start)}
	p.cpu, p.other = processCPU(b)-cpu0, emulatorCPU(b, emuPID)-emu0
	stop()
	if err := <-done; err != nil {
		b.Fatalf("bridge Run: %v", err)
	}
	return p
}

// memKinesis serves records held in memory through the Kinesis interface:
// GetRecords costs no HTTP, JSON or emulator time, so the bridge's own
// publish path is what limits it.
type memKinesis struct {
	shards map[string][]types.Record
}

// newMemKinesis holds n records like the benchmark's, spread over shards.
func newMemKinesis(shards, n int) *memKinesis {
	m := &memKinesis{shards: map[string][]types.Record{}}
	arrival := time.Now()
	for i := range n {
		id := fmt.Sprintf("shardId-%012d", i%shards)
		m.shards[id] = append(m.shards[id], types.Record{
			Data: benchRecord(i), PartitionKey: aws.String(strconv.Itoa(i)),
			SequenceNumber:              aws.String(fmt.Sprintf("4966%052d", i)),
			ApproximateArrivalTimestamp: aws.Time(arrival),
		})
	}
	return m
}

func (m *memKinesis) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	out := &kinesis.ListShardsOutput{}
	for id := range m.shards {
		out.Shards = append(out.Shards, types.Shard{ShardId: aws.String(id)})
	}
	return out, nil
}

func (m *memKinesis) GetShardIterator(_ context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	if in.ShardIteratorType != types.ShardIteratorTypeTrimHorizon {
		return nil, fmt.Errorf("memKinesis: iterator type %s", in.ShardIteratorType)
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String(aws.ToString(in.ShardId) + "/0")}, nil
}

func (m *memKinesis) GetRecords(_ context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	shard, pos, _ := strings.Cut(aws.ToString(in.ShardIterator), "/")
	from, _ := strconv.Atoi(pos)
	recs := m.shards[shard]
	to := min(from+int(aws.ToInt32(in.Limit)), len(recs))
	var behind int64
	if to < len(recs) {
		behind = 1000
	}
	return &kinesis.GetRecordsOutput{
		Records: recs[from:to], MillisBehindLatest: aws.Int64(behind),
		NextShardIterator: aws.String(shard + "/" + strconv.Itoa(to)),
	}, nil
}

// benchRecord is a patchset-created event as Gerrit's events-aws-kinesis
// plugin writes it, padded to about benchRecordSize bytes.
func benchRecord(i int) []byte {
	s := fmt.Sprintf(`{"uploader":{"name":"Dev %d","email":"dev%d@example.com","username":"dev%d"},`+
		`"patchSet":{"number":1,"revision":"%040x","parents":["%040x"],"ref":"refs/changes/%02d/%d/1","createdOn":%d,"kind":"REWORK","sizeInsertions":12,"sizeDeletions":-3},`+
		`"change":{"project":"platform/core","branch":"main","id":"I%040x","number":%d,"subject":"Fix %d",`+
		`"owner":{"name":"Dev %d","username":"dev%d"},"url":"https://review.example.com/c/platform/core/+/%d","status":"NEW"},`+
		`"project":"platform/core","refName":"refs/heads/main","type":"patchset-created","eventCreatedOn":%d`,
		i%97, i%97, i%97, i, i+1, i%100, i, 1700000000+i, i, i, i, i%97, i%97, i, 1700000000+i)
	if pad := benchRecordSize - len(s) - len(`,"pad":""}`); pad > 0 {
		s += `,"pad":"` + strings.Repeat("x", pad) + `"`
	}
	return []byte(s + "}")
}

// putBench puts n records (PutRecords of 500, partition key = change number,
// so that every shard gets its share) and returns how many each shard holds.
func putBench(b *testing.B, kin *kinesislocal.Emulator, n int) map[string]int {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	perShard := map[string]int{}
	for from := 0; from < n; from += 500 {
		var entries []types.PutRecordsRequestEntry
		for i := from; i < min(from+500, n); i++ {
			entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(strconv.Itoa(i)), Data: benchRecord(i)})
		}
		out, err := kin.Client().PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(testStream), Records: entries})
		if err != nil {
			b.Fatalf("PutRecords: %v", err)
		}
		if c := aws.ToInt32(out.FailedRecordCount); c != 0 {
			b.Fatalf("PutRecords: %d failed", c)
		}
		for _, r := range out.Records {
			perShard[aws.ToString(r.ShardId)]++
		}
	}
	return perShard
}

// rawRead reads every shard from TRIM_HORIZON (one plain loop per shard, in
// parallel, as the bridge reads them) until each has returned its records,
// and returns how long that took.
func rawRead(b *testing.B, kc *kinesis.Client, perShard map[string]int) (time.Duration, map[string][]types.Record) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	limit := int32(envInt("BRIDGE_BENCH_RAW_LIMIT", benchRawLimit))
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	read := map[string][]types.Record{}
	errs := make(chan error, len(perShard))
	for shard, want := range perShard {
		wg.Go(func() {
			it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
				StreamName: aws.String(testStream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
			if err != nil {
				errs <- err
				return
			}
			iter := it.ShardIterator
			var recs []types.Record
			defer func() { mu.Lock(); read[shard] = recs; mu.Unlock() }()
			for got := 0; got < want; {
				out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(limit)})
				if err != nil {
					errs <- fmt.Errorf("GetRecords %s after %d of %d: %w", shard, got, want, err)
					return
				}
				got += len(out.Records)
				recs = append(recs, out.Records...)
				iter = out.NextShardIterator
			}
		})
	}
	wg.Wait()
	close(errs)
	elapsed := time.Since(start)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed, read
}

// processCPU is the user + system CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// emulatorCPU is the user + system CPU time of process pid so far
// (/proc/<pid>/stat fields 14 and 15, in clock ticks of 1/100 s); 0 for pid 0.
func emulatorCPU(b *testing.B, pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 on
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
