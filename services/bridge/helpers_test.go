package main

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

func putInput(stream, data string) *kinesis.PutRecordInput {
	return &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("ref-updated"), Data: []byte(data)}
}
