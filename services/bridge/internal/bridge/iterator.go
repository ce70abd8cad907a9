package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
)

// Start is where a shard without a checkpoint is read from (kinesis.start).
type Start struct {
	Type string    // "latest", "trim_horizon" or "at_timestamp"
	Time time.Time // with at_timestamp
}

// Iterator is a GetShardIterator request, decided.
type Iterator struct {
	Type     types.ShardIteratorType
	Sequence string    // AFTER_SEQUENCE_NUMBER
	Time     time.Time // AT_TIMESTAMP
}

func (it Iterator) String() string {
	switch it.Type {
	case types.ShardIteratorTypeAfterSequenceNumber:
		return fmt.Sprintf("%s %s", it.Type, it.Sequence)
	case types.ShardIteratorTypeAtTimestamp:
		return fmt.Sprintf("%s %s", it.Type, it.Time.UTC().Format(time.RFC3339Nano))
	}
	return string(it.Type)
}

// ChooseIterator decides where reading a shard starts: after the checkpoint
// when there is one; else TRIM_HORIZON for a child whose parent is still listed
// (the records written to the child since the split must not be skipped, as
// the KCL does); else the configured start.
func ChooseIterator(checkpoint string, child bool, start Start) Iterator {
	if checkpoint != "" && checkpoint != ShardEnd {
		return Iterator{Type: types.ShardIteratorTypeAfterSequenceNumber, Sequence: checkpoint}
	}
	return Fallback(child, start)
}

// Fallback is the iterator used when there is no checkpoint, or when the
// checkpoint's iterator request is rejected (the record was trimmed, or the
// checkpoint does not belong to the shard).
func Fallback(child bool, start Start) Iterator {
	if child {
		return Iterator{Type: types.ShardIteratorTypeTrimHorizon}
	}
	switch start.Type {
	case "trim_horizon":
		return Iterator{Type: types.ShardIteratorTypeTrimHorizon}
	case "at_timestamp":
		return Iterator{Type: types.ShardIteratorTypeAtTimestamp, Time: start.Time}
	}
	return Iterator{Type: types.ShardIteratorTypeLatest}
}

// ErrorKind classifies a Kinesis error for the reader.
type ErrorKind int

// Kinds of Kinesis errors.
const (
	ErrOther     ErrorKind = iota // unknown: back off and retry
	ErrThrottled                  // ProvisionedThroughputExceeded, LimitExceeded: back off
	ErrExpired                    // ExpiredIteratorException: new iterator from the checkpoint
	ErrRejected                   // the checkpoint's sequence number is refused: fall back
	ErrCanceled                   // the context ended
)

// Classify maps an error of GetShardIterator or GetRecords to what the
// reader does about it. AWS answers InvalidArgumentException for a sequence
// number it cannot use; kinesis-mock answers ResourceNotFoundException
// "Unable to find record with provided SequenceNumber".
func Classify(err error) ErrorKind {
	if err == nil {
		return ErrOther
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ErrCanceled
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException":
			return ErrThrottled
		case "ExpiredIteratorException":
			return ErrExpired
		case "InvalidArgumentException":
			if strings.Contains(strings.ToLower(api.ErrorMessage()), "sequence") {
				return ErrRejected
			}
		case "ResourceNotFoundException":
			if strings.Contains(api.ErrorMessage(), "SequenceNumber") {
				return ErrRejected
			}
		}
	}
	return ErrOther
}
