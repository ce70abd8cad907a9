package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

func TestChooseIterator(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	after := func(s string) Iterator {
		return Iterator{Type: types.ShardIteratorTypeAfterSequenceNumber, Sequence: s}
	}
	latest := Iterator{Type: types.ShardIteratorTypeLatest}
	trim := Iterator{Type: types.ShardIteratorTypeTrimHorizon}
	at := Iterator{Type: types.ShardIteratorTypeAtTimestamp, Time: ts}
	tests := []struct {
		name       string
		checkpoint string
		child      bool
		start      Start
		want       Iterator
	}{
		{"checkpoint wins", "4960", false, Start{Type: "latest"}, after("4960")},
		{"checkpoint wins for a child too", "4960", true, Start{Type: "latest"}, after("4960")},
		{"no checkpoint: latest", "", false, Start{Type: "latest"}, latest},
		{"no checkpoint: empty start is latest", "", false, Start{}, latest},
		{"no checkpoint: trim_horizon", "", false, Start{Type: "trim_horizon"}, trim},
		{"no checkpoint: at_timestamp", "", false, Start{Type: "at_timestamp", Time: ts}, at},
		{"child without checkpoint reads from its start", "", true, Start{Type: "latest"}, trim},
		{"SHARD_END is not a sequence", ShardEnd, false, Start{Type: "trim_horizon"}, trim},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChooseIterator(tt.checkpoint, tt.child, tt.start); got != tt.want {
				t.Errorf("ChooseIterator(%q, %v, %v) = %v; want %v", tt.checkpoint, tt.child, tt.start, got, tt.want)
			}
		})
	}
}

func TestFallbackAndResume(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		got  Iterator
		want Iterator
	}{
		{"rejected checkpoint falls back to latest", Fallback(false, Start{Type: "latest"}), Iterator{Type: types.ShardIteratorTypeLatest}},
		{"rejected checkpoint falls back to trim_horizon", Fallback(false, Start{Type: "trim_horizon"}), Iterator{Type: types.ShardIteratorTypeTrimHorizon}},
		{"rejected checkpoint falls back to at_timestamp", Fallback(false, Start{Type: "at_timestamp", Time: t0}), Iterator{Type: types.ShardIteratorTypeAtTimestamp, Time: t0}},
		{"rejected checkpoint of a child: trim_horizon", Fallback(true, Start{Type: "latest"}), Iterator{Type: types.ShardIteratorTypeTrimHorizon}},
		{"expired: after the checkpoint", Resume("77", Iterator{Type: types.ShardIteratorTypeLatest}, t0), Iterator{Type: types.ShardIteratorTypeAfterSequenceNumber, Sequence: "77"}},
		{"expired before any record: latest becomes its moment", Resume("", Iterator{Type: types.ShardIteratorTypeLatest}, t0), Iterator{Type: types.ShardIteratorTypeAtTimestamp, Time: t0}},
		{"expired before any record: trim_horizon again", Resume("", Iterator{Type: types.ShardIteratorTypeTrimHorizon}, t0), Iterator{Type: types.ShardIteratorTypeTrimHorizon}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v; want %v", tt.got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	api := func(code, msg string) error {
		return fmt.Errorf("operation error Kinesis: GetRecords: %w", &smithy.GenericAPIError{Code: code, Message: msg})
	}
	tests := []struct {
		name string
		err  error
		want ErrorKind
	}{
		{"throughput exceeded", api("ProvisionedThroughputExceededException", "Rate exceeded for shard"), ErrThrottled},
		{"limit exceeded", api("LimitExceededException", "too many"), ErrThrottled},
		{"expired iterator", api("ExpiredIteratorException", "Iterator expired"), ErrExpired},
		{"AWS: bad sequence number", api("InvalidArgumentException", "StartingSequenceNumber 1 used in GetShardIterator on shard s is invalid"), ErrRejected},
		{"kinesis-mock: unknown sequence number", api("ResourceNotFoundException", "Unable to find record with provided SequenceNumber SequenceNumber(1)"), ErrRejected},
		{"stream not found is not a rejected checkpoint", api("ResourceNotFoundException", "Stream s not found"), ErrOther},
		{"canceled", fmt.Errorf("call: %w", context.Canceled), ErrCanceled},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), ErrCanceled},
		{"network", errors.New("connection refused"), ErrOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}
