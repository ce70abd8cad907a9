package gerritsim

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// KinesisSink returns an OnEvent function that writes each event into
// stream as the events-aws-kinesis plugin does: one PutRecord per event,
// Data = the event JSON exactly, PartitionKey = the event type. Errors go to
// errs (which may be nil); the event is then lost, as it would be if the
// plugin gave up. stream is a stream name or ARN.
func KinesisSink(ctx context.Context, client *kinesis.Client, stream string, errs func(error)) func(eventType string, data []byte) {
	return func(eventType string, data []byte) {
		if _, _, err := PutEvent(ctx, client, stream, eventType, data); err != nil && errs != nil {
			errs(err)
		}
	}
}

// PutEvent writes one event record into stream (a name or an ARN) and
// returns the shard id and sequence number Kinesis assigned.
func PutEvent(ctx context.Context, client *kinesis.Client, stream, eventType string, data []byte) (shardID, seq string, err error) {
	in := &kinesis.PutRecordInput{
		Data:         data,
		PartitionKey: aws.String(eventType),
	}
	if strings.HasPrefix(stream, "arn:") {
		in.StreamARN = aws.String(stream)
	} else {
		in.StreamName = aws.String(stream)
	}
	out, err := client.PutRecord(ctx, in)
	if err != nil {
		return "", "", fmt.Errorf("gerritsim: put %s event into kinesis stream %s: %w", eventType, stream, err)
	}
	return aws.ToString(out.ShardId), aws.ToString(out.SequenceNumber), nil
}
