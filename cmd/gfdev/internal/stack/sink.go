package stack

// SinkFailures is the number of Gerrit events that never reached Kinesis
// (PutRecord failed for 30 seconds).
func (s *Stack) SinkFailures() int64 { return s.sink.Failures() }

// SinkRetries is the number of PutRecord calls retried by the Kinesis sink.
func (s *Stack) SinkRetries() int64 { return s.sink.Retries() }
