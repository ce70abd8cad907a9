package kinesislocal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func listShards(t *testing.T, ctx context.Context, c *kinesis.Client, stream string) []types.Shard {
	t.Helper()
	var shards []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		out, err := c.ListShards(ctx, in)
		if err != nil {
			t.Fatalf("ListShards %s: %v", stream, err)
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil {
			return shards
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

func iterator(t *testing.T, ctx context.Context, c *kinesis.Client, in *kinesis.GetShardIteratorInput) *string {
	t.Helper()
	out, err := c.GetShardIterator(ctx, in)
	if err != nil {
		t.Fatalf("GetShardIterator %+v: %v", in, err)
	}
	if out.ShardIterator == nil {
		t.Fatalf("GetShardIterator: nil iterator")
	}
	return out.ShardIterator
}

// TestEmulator runs one emulator through the calls the bridge relies on.
func TestEmulator(t *testing.T) {
	t0 := time.Now()
	e := kinesislocal.StartT(t, map[string]int{"gerrit-events": 2})
	t.Logf("started in %v at %s (pid %d)", time.Since(t0).Round(time.Millisecond), e.Endpoint(), e.PID())
	if !strings.HasPrefix(e.Endpoint(), "http://127.0.0.1:") {
		t.Fatalf("endpoint %q is not a loopback http URL", e.Endpoint())
	}
	c := e.Client()
	ctx := ctxT(t, 50*time.Second)

	t.Run("ListShards", func(t *testing.T) {
		shards := listShards(t, ctx, c, "gerrit-events")
		if len(shards) != 2 {
			t.Fatalf("got %d shards, want 2: %+v", len(shards), shards)
		}
		for _, s := range shards {
			if s.SequenceNumberRange == nil || s.SequenceNumberRange.StartingSequenceNumber == nil {
				t.Errorf("shard %s has no starting sequence number", aws.ToString(s.ShardId))
			}
			if s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil {
				t.Errorf("fresh shard %s is closed", aws.ToString(s.ShardId))
			}
		}
	})

	t.Run("PutGet", func(t *testing.T) {
		data := []byte(`{"type":"patchset-created","change":{"number":42},"bin":"` + "\x00\xff\n" + `"}`)
		put, err := c.PutRecord(ctx, &kinesis.PutRecordInput{
			StreamName:   aws.String("gerrit-events"),
			PartitionKey: aws.String("patchset-created"),
			Data:         data,
		})
		if err != nil {
			t.Fatalf("PutRecord: %v", err)
		}
		seq, shard := aws.ToString(put.SequenceNumber), aws.ToString(put.ShardId)
		if seq == "" || shard == "" {
			t.Fatalf("PutRecord returned seq %q shard %q", seq, shard)
		}
		t.Logf("put -> shard %s seq %s", shard, seq)

		it := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
			StreamName: aws.String("gerrit-events"), ShardId: aws.String(shard),
			ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		got, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it})
		if err != nil {
			t.Fatalf("GetRecords: %v", err)
		}
		if len(got.Records) != 1 {
			t.Fatalf("got %d records, want 1", len(got.Records))
		}
		r := got.Records[0]
		if !bytes.Equal(r.Data, data) {
			t.Errorf("data = %q, want %q", r.Data, data)
		}
		if aws.ToString(r.SequenceNumber) != seq {
			t.Errorf("sequence number = %s, want %s", aws.ToString(r.SequenceNumber), seq)
		}
		if aws.ToString(r.PartitionKey) != "patchset-created" {
			t.Errorf("partition key = %q", aws.ToString(r.PartitionKey))
		}
		if r.ApproximateArrivalTimestamp == nil {
			t.Errorf("no ApproximateArrivalTimestamp")
		}
		if got.NextShardIterator == nil {
			t.Fatalf("open shard returned no NextShardIterator")
		}
		t.Logf("GetRecords: MillisBehindLatest=%d after reading the only record", aws.ToInt64(got.MillisBehindLatest))

		// The next iterator of the same call: nothing new.
		again, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: got.NextShardIterator})
		if err != nil {
			t.Fatalf("GetRecords(next): %v", err)
		}
		if len(again.Records) != 0 {
			t.Errorf("NextShardIterator returned %d records again", len(again.Records))
		}

		// AFTER_SEQUENCE_NUMBER the record's sequence: nothing new.
		after := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
			StreamName: aws.String("gerrit-events"), ShardId: aws.String(shard),
			ShardIteratorType:      types.ShardIteratorTypeAfterSequenceNumber,
			StartingSequenceNumber: aws.String(seq),
		})
		out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: after})
		if err != nil {
			t.Fatalf("GetRecords(AFTER_SEQUENCE_NUMBER): %v", err)
		}
		if len(out.Records) != 0 {
			t.Errorf("AFTER_SEQUENCE_NUMBER %s returned %d records, first seq %s", seq, len(out.Records), aws.ToString(out.Records[0].SequenceNumber))
		}
		// AT_SEQUENCE_NUMBER returns it again.
		at := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
			StreamName: aws.String("gerrit-events"), ShardId: aws.String(shard),
			ShardIteratorType:      types.ShardIteratorTypeAtSequenceNumber,
			StartingSequenceNumber: aws.String(seq),
		})
		out, err = c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: at})
		if err != nil {
			t.Fatalf("GetRecords(AT_SEQUENCE_NUMBER): %v", err)
		}
		if len(out.Records) != 1 || aws.ToString(out.Records[0].SequenceNumber) != seq {
			t.Errorf("AT_SEQUENCE_NUMBER %s returned %d records", seq, len(out.Records))
		}

		// A record put after the AFTER_SEQUENCE_NUMBER iterator was taken shows up.
		put2, err := c.PutRecord(ctx, &kinesis.PutRecordInput{
			StreamName: aws.String("gerrit-events"), PartitionKey: aws.String("patchset-created"), Data: []byte("second"),
		})
		if err != nil {
			t.Fatalf("PutRecord 2: %v", err)
		}
		if aws.ToString(put2.ShardId) != shard {
			t.Fatalf("same partition key went to shard %s, then %s", shard, aws.ToString(put2.ShardId))
		}
		out, err = c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: after})
		if err != nil {
			t.Fatalf("GetRecords(AFTER_SEQUENCE_NUMBER, again): %v", err)
		}
		if len(out.Records) != 1 || string(out.Records[0].Data) != "second" || aws.ToString(out.Records[0].SequenceNumber) != aws.ToString(put2.SequenceNumber) {
			t.Errorf("after a second put, AFTER_SEQUENCE_NUMBER iterator returned %d records", len(out.Records))
		}
		if seqLess(aws.ToString(put2.SequenceNumber), seq) {
			t.Errorf("sequence numbers not increasing: %s then %s", seq, aws.ToString(put2.SequenceNumber))
		}
	})

	t.Run("SplitShard", func(t *testing.T) { testSplitShard(t, ctx, e) })

	t.Run("Throughput", func(t *testing.T) { measureThroughput(t, ctx, e) })

	t.Run("ExpiredIterator", func(t *testing.T) { testExpiredIterator(t, ctx, e) })

	t.Run("Stop", func(t *testing.T) {
		pid := e.PID()
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("emulator pid %d not running before Stop: %v", pid, err)
		}
		t0 := time.Now()
		if err := e.Stop(); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		t.Logf("Stop took %v", time.Since(t0).Round(time.Millisecond))
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("after Stop, kill(%d, 0) = %v, want ESRCH", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("after Stop, process group %d still has members: %v", pid, err)
		}
		if err := e.Stop(); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := c.ListStreams(sctx, &kinesis.ListStreamsInput{}, func(o *kinesis.Options) { o.RetryMaxAttempts = 1 }); err == nil {
			t.Fatalf("ListStreams still answered after Stop")
		}
	})
}

func seqLess(a, b string) bool {
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	return x.Cmp(y) < 0
}

func testSplitShard(t *testing.T, ctx context.Context, e *kinesislocal.Emulator) {
	c := e.Client()
	const stream = "split-test"
	if err := e.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	shards := listShards(t, ctx, c, stream)
	if len(shards) != 1 {
		t.Fatalf("got %d shards, want 1", len(shards))
	}
	parent := shards[0]
	parentID := aws.ToString(parent.ShardId)
	put, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: []byte("before-split")})
	if err != nil {
		t.Fatal(err)
	}
	// An iterator taken before the split, used after it.
	preIt := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(parentID), ShardIteratorType: types.ShardIteratorTypeLatest,
	})

	lo, _ := new(big.Int).SetString(aws.ToString(parent.HashKeyRange.StartingHashKey), 10)
	hi, _ := new(big.Int).SetString(aws.ToString(parent.HashKeyRange.EndingHashKey), 10)
	mid := new(big.Int).Add(lo, hi)
	mid.Rsh(mid, 1)
	t0 := time.Now()
	if _, err := c.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName: aws.String(stream), ShardToSplit: aws.String(parentID), NewStartingHashKey: aws.String(mid.String()),
	}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	sum, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("right after SplitShard: stream status %s, shards listed %d", sum.StreamDescriptionSummary.StreamStatus, len(listShards(t, ctx, c, stream)))

	// Wait (the emulator's SPLIT_SHARD_DURATION is 50ms) until the parent is closed.
	var all []types.Shard
	deadline := time.Now().Add(15 * time.Second)
	for {
		all = listShards(t, ctx, c, stream)
		closed := false
		for _, s := range all {
			if aws.ToString(s.ShardId) == parentID && s.SequenceNumberRange.EndingSequenceNumber != nil {
				closed = true
			}
		}
		if closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("parent %s never got an EndingSequenceNumber: %+v", parentID, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("parent closed %v after SplitShard", time.Since(t0).Round(time.Millisecond))
	sum, err = c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream status once parent closed: %s, open shard count %d", sum.StreamDescriptionSummary.StreamStatus, aws.ToInt32(sum.StreamDescriptionSummary.OpenShardCount))

	var children []types.Shard
	for _, s := range all {
		t.Logf("shard %s parent=%s adjParent=%s hash=[%s..%s] seq=[%s..%s]", aws.ToString(s.ShardId), aws.ToString(s.ParentShardId), aws.ToString(s.AdjacentParentShardId),
			aws.ToString(s.HashKeyRange.StartingHashKey), aws.ToString(s.HashKeyRange.EndingHashKey),
			aws.ToString(s.SequenceNumberRange.StartingSequenceNumber), aws.ToString(s.SequenceNumberRange.EndingSequenceNumber))
		if aws.ToString(s.ParentShardId) == parentID {
			children = append(children, s)
		}
	}
	if len(all) != 3 || len(children) != 2 {
		t.Fatalf("after split: %d shards, %d children of %s; want 3 and 2", len(all), len(children), parentID)
	}
	for _, ch := range children {
		if ch.SequenceNumberRange.EndingSequenceNumber != nil {
			t.Errorf("child %s is closed", aws.ToString(ch.ShardId))
		}
	}
	if got := aws.ToString(children[0].HashKeyRange.EndingHashKey) + "/" + aws.ToString(children[1].HashKeyRange.StartingHashKey); got != new(big.Int).Sub(mid, big.NewInt(1)).String()+"/"+mid.String() &&
		got != hi.String()+"/"+lo.String() {
		t.Errorf("children do not split the range at %s: %s", mid, got)
	}

	// Reading the closed parent to its end: the old record, then a nil
	// NextShardIterator (and ChildShards).
	it := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(parentID), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	var got []string
	var lastOut *kinesis.GetRecordsOutput
	for i := 0; it != nil && i < 10; i++ {
		out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it})
		if err != nil {
			t.Fatalf("GetRecords on closed parent: %v", err)
		}
		for _, r := range out.Records {
			got = append(got, string(r.Data))
		}
		t.Logf("parent GetRecords #%d: %d records, next=%v, childShards=%d, millisBehind=%d", i, len(out.Records), out.NextShardIterator != nil, len(out.ChildShards), aws.ToInt64(out.MillisBehindLatest))
		it, lastOut = out.NextShardIterator, out
	}
	if len(got) != 1 || got[0] != "before-split" {
		t.Errorf("closed parent returned %q, want [before-split]", got)
	}
	if it != nil {
		t.Errorf("closed parent still returns a NextShardIterator after 10 reads")
	} else if len(lastOut.ChildShards) != 2 {
		t.Errorf("end of closed parent: %d ChildShards, want 2", len(lastOut.ChildShards))
	}
	_ = put

	// The iterator taken (LATEST) before the split.
	out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: preIt})
	if err != nil {
		t.Logf("pre-split LATEST iterator after split: error %v", err)
	} else {
		t.Logf("pre-split LATEST iterator after split: %d records, next=%v, childShards=%d", len(out.Records), out.NextShardIterator != nil, len(out.ChildShards))
	}

	// Writes now land in the children.
	p2, err := c.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: []byte("after-split")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(p2.ShardId) == parentID {
		t.Errorf("a put after the split went to the closed parent %s", parentID)
	}
	if !seqLess(aws.ToString(put.SequenceNumber), aws.ToString(p2.SequenceNumber)) {
		t.Logf("note: child sequence %s is not greater than parent sequence %s", aws.ToString(p2.SequenceNumber), aws.ToString(put.SequenceNumber))
	}
}

// measureThroughput puts 2000 records with PutRecords batches of 500 and reads
// them back; the rates are reported, not asserted (beyond getting them all).
func measureThroughput(t *testing.T, ctx context.Context, e *kinesislocal.Emulator) {
	c := e.Client()
	const stream, n, batch = "throughput", 2000, 500
	if err := e.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 400) // about a Gerrit event's size
	t0 := time.Now()
	for i := 0; i < n; i += batch {
		entries := make([]types.PutRecordsRequestEntry, batch)
		for j := range entries {
			entries[j] = types.PutRecordsRequestEntry{
				PartitionKey: aws.String(fmt.Sprintf("change-%d", i+j)),
				Data:         append([]byte(fmt.Sprintf("%06d:", i+j)), payload...),
			}
		}
		out, err := c.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			t.Fatalf("PutRecords: %v", err)
		}
		if aws.ToInt32(out.FailedRecordCount) != 0 {
			t.Fatalf("PutRecords: %d failed", aws.ToInt32(out.FailedRecordCount))
		}
	}
	putDur := time.Since(t0)

	shard := aws.ToString(listShards(t, ctx, c, stream)[0].ShardId)
	it := iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	t1 := time.Now()
	read, calls := 0, 0
	var perCall []int
	var behind []int64
	for read < n && time.Since(t1) < 20*time.Second {
		out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(10000)})
		if err != nil {
			t.Fatalf("GetRecords after %d records: %v", read, err)
		}
		calls++
		for k, r := range out.Records {
			if want := fmt.Sprintf("%06d:", read+k); !bytes.HasPrefix(r.Data, []byte(want)) {
				t.Fatalf("record %d has data %.7q, want prefix %s", read+k, r.Data, want)
			}
		}
		read += len(out.Records)
		perCall = append(perCall, len(out.Records))
		behind = append(behind, aws.ToInt64(out.MillisBehindLatest))
		it = out.NextShardIterator
	}
	readDur := time.Since(t1)
	if read != n {
		t.Fatalf("read %d of %d records", read, n)
	}
	t.Logf("MEASURE put %d records (PutRecords x%d) in %v = %.0f rec/s; read back in %v with %d GetRecords(Limit 10000) calls (records per call %v, MillisBehindLatest %v) = %.0f rec/s",
		n, n/batch, putDur.Round(time.Millisecond), float64(n)/putDur.Seconds(),
		readDur.Round(time.Millisecond), calls, perCall, behind, float64(n)/readDur.Seconds())

	// A small Limit is honoured.
	it = iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(7)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Records) != 7 {
		t.Errorf("Limit 7 returned %d records", len(out.Records))
	}
	t.Logf("Limit 7 at the start of %d records: MillisBehindLatest=%d", n, aws.ToInt64(out.MillisBehindLatest))
}

// testExpiredIterator: the emulator rejects shard iterators older than 300s
// (by its wall clock, which AdvanceClock moves).
func testExpiredIterator(t *testing.T, ctx context.Context, e *kinesislocal.Emulator) {
	c := e.Client()
	const stream = "gerrit-events"
	shard := aws.ToString(listShards(t, ctx, c, stream)[0].ShardId)
	get := func() *string {
		return iterator(t, ctx, c, &kinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
	}
	it := get()
	if err := e.AdvanceClock(ctx, 299*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it})
	if err != nil {
		t.Fatalf("a 299s old iterator: %v", err)
	}
	next := out.NextShardIterator
	if err := e.AdvanceClock(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it})
	var expired *types.ExpiredIteratorException
	if !errors.As(err, &expired) {
		t.Fatalf("a 301s old iterator: err = %v, want ExpiredIteratorException", err)
	}
	t.Logf("301s old iterator: %v", err)
	// The NextShardIterator handed out at +299s is still valid at +301s.
	if _, err := c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: next}); err != nil {
		t.Errorf("a 2s old NextShardIterator: %v", err)
	}
	// A fresh iterator works and still finds the records put earlier.
	out, err = c.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: get()})
	if err != nil {
		t.Fatalf("fresh iterator after the clock jump: %v", err)
	}
	if len(out.Records) == 0 {
		t.Errorf("fresh TRIM_HORIZON iterator found no records after the clock jump")
	}
	t.Logf("after +301s: fresh TRIM_HORIZON read %d records, MillisBehindLatest=%d", len(out.Records), aws.ToInt64(out.MillisBehindLatest))
}
