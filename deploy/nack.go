package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/gerritflow/gerritflow/streams"
)

// NACKAPIVersion is the API of the NATS JetStream controller's resources.
const NACKAPIVersion = "jetstream.nats.io/v1beta2"

// The NACK resources gerritflow uses. Their fields are those of
// github.com/nats-io/nack pkg/jetstream/apis/jetstream/v1beta2 (the module is
// not served by the Go module proxy, so the subset used here is mirrored,
// with the same JSON names).
type (
	// NACKStream is a jetstream.nats.io/v1beta2 Stream.
	NACKStream struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              NACKStreamSpec `json:"spec"`
	}
	// NACKStreamSpec is the subset of StreamSpec gerritflow sets.
	NACKStreamSpec struct {
		Name            string          `json:"name"`
		Description     string          `json:"description,omitempty"`
		Subjects        []string        `json:"subjects,omitempty"`
		Retention       string          `json:"retention,omitempty"`
		MaxMsgs         int             `json:"maxMsgs,omitempty"`
		MaxBytes        int             `json:"maxBytes,omitempty"`
		MaxAge          metav1.Duration `json:"maxAge,omitempty"`
		MaxMsgSize      int             `json:"maxMsgSize,omitempty"`
		Storage         string          `json:"storage,omitempty"`
		Discard         string          `json:"discard,omitempty"`
		Replicas        int             `json:"replicas,omitempty"`
		DuplicateWindow metav1.Duration `json:"duplicateWindow,omitempty"`
		PreventDelete   bool            `json:"preventDelete,omitempty"`
	}

	// NACKConsumer is a jetstream.nats.io/v1beta2 Consumer.
	NACKConsumer struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              NACKConsumerSpec `json:"spec"`
	}
	// NACKConsumerSpec is the subset of ConsumerSpec gerritflow sets.
	NACKConsumerSpec struct {
		StreamName     string   `json:"streamName"`
		DurableName    string   `json:"durableName"`
		Description    string   `json:"description,omitempty"`
		DeliverPolicy  string   `json:"deliverPolicy,omitempty"`
		AckPolicy      string   `json:"ackPolicy,omitempty"`
		AckWait        string   `json:"ackWait,omitempty"`
		MaxDeliver     int      `json:"maxDeliver,omitempty"`
		BackOff        []string `json:"backoff,omitempty"`
		FilterSubjects []string `json:"filterSubjects,omitempty"`
		MaxAckPending  int      `json:"maxAckPending,omitempty"`
		ReplayPolicy   string   `json:"replayPolicy,omitempty"`
		Replicas       int      `json:"replicas,omitempty"`
		PreventDelete  bool     `json:"preventDelete,omitempty"`
		// Metadata holds gerritflow.backoff, the retry schedule the stage applies.
		Metadata map[string]string `json:"metadata,omitempty"`
	}

	// NACKKeyValue is a jetstream.nats.io/v1beta2 KeyValue.
	NACKKeyValue struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata,omitempty"`
		Spec              NACKKeyValueSpec `json:"spec"`
	}
	// NACKKeyValueSpec is the subset of KeyValueSpec gerritflow sets.
	NACKKeyValueSpec struct {
		Bucket        string `json:"bucket"`
		Description   string `json:"description,omitempty"`
		History       int    `json:"history,omitempty"`
		TTL           string `json:"ttl,omitempty"`
		MaxBytes      int    `json:"maxBytes,omitempty"`
		Storage       string `json:"storage,omitempty"`
		Replicas      int    `json:"replicas,omitempty"`
		PreventDelete bool   `json:"preventDelete,omitempty"`
	}
)

// NACKName turns a stream, consumer or bucket name into a Kubernetes object
// name: GERRIT_RAW becomes gerrit-raw, kinesis_leases kinesis-leases.
func NACKName(parts ...string) string {
	return strings.ToLower(strings.ReplaceAll(strings.Join(parts, "-"), "_", "-"))
}

// NACK renders every stream, durable consumer and KV bucket of set as NACK
// resources (multi-document YAML), with replicas replicas each: the
// Kubernetes form of `gfctl provision`. Consumers inherit their stream's
// replicas. Every resource has preventDelete, so deleting the manifests never
// deletes the data.
func NACK(set *streams.Set, replicas int) ([]byte, error) {
	if replicas < 1 || replicas > 5 {
		return nil, fmt.Errorf("nack: replicas %d not in 1..5", replicas)
	}
	var docs []any
	tm := func(kind string) metav1.TypeMeta { return metav1.TypeMeta{APIVersion: NACKAPIVersion, Kind: kind} }
	om := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "gerritflow"}}
	}
	for _, s := range set.Streams {
		if s.Mirror != nil || len(s.Sources) > 0 || s.SubjectTransform != nil || s.RePublish != nil || s.Placement != nil {
			return nil, fmt.Errorf("nack: stream %s uses a setting the generator does not map", s.Name)
		}
		docs = append(docs, NACKStream{TypeMeta: tm("Stream"), ObjectMeta: om(NACKName(s.Name)), Spec: NACKStreamSpec{
			Name: s.Name, Description: s.Description, Subjects: s.Subjects,
			Retention: enum(s.Retention), Storage: enum(s.Storage), Discard: enum(s.Discard),
			MaxMsgs: positive(s.MaxMsgs), MaxBytes: positive(s.MaxBytes), MaxMsgSize: int(max(s.MaxMsgSize, 0)),
			MaxAge: metav1.Duration{Duration: s.MaxAge}, DuplicateWindow: metav1.Duration{Duration: s.Duplicates},
			Replicas: replicas, PreventDelete: true,
		}})
	}
	for _, c := range set.Consumers {
		cc := c.Config
		if cc.FilterSubject != "" || cc.DeliverSubject != "" || cc.MemoryStorage || cc.Replicas != 0 {
			return nil, fmt.Errorf("nack: consumer %s uses a setting the generator does not map", cc.Durable)
		}
		var backoff []string
		for _, d := range cc.BackOff {
			backoff = append(backoff, d.String())
		}
		docs = append(docs, NACKConsumer{TypeMeta: tm("Consumer"), ObjectMeta: om(NACKName(c.Stream, cc.Durable)), Spec: NACKConsumerSpec{
			StreamName: c.Stream, DurableName: cc.Durable, Description: cc.Description,
			DeliverPolicy: enum(cc.DeliverPolicy), AckPolicy: enum(cc.AckPolicy), AckWait: duration(cc.AckWait),
			MaxDeliver: cc.MaxDeliver, BackOff: backoff, FilterSubjects: cc.FilterSubjects,
			MaxAckPending: cc.MaxAckPending, ReplayPolicy: enum(cc.ReplayPolicy), PreventDelete: true,
			Metadata: cc.Metadata,
		}})
	}
	for _, b := range set.Buckets {
		docs = append(docs, NACKKeyValue{TypeMeta: tm("KeyValue"), ObjectMeta: om(NACKName("kv", b.Bucket)), Spec: NACKKeyValueSpec{
			Bucket: b.Bucket, Description: b.Description, History: int(b.History), TTL: duration(b.TTL),
			MaxBytes: positive(b.MaxBytes), Storage: enum(b.Storage), Replicas: replicas, PreventDelete: true,
		}})
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "# Generated from streams/ by deploy.NACK with %d replicas: do not edit.\n", replicas)
	out.WriteString("# Regenerate with: cd deploy && go test -run TestNACKManifest -update\n")
	for _, d := range docs {
		y, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes(), nil
}

// enum is a jetstream enum as the server API (and NACK) spell it: "limits", "file", "explicit".
func enum(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the jetstream enums always marshal
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		panic(err)
	}
	return s
}

func positive(n int64) int {
	if n <= 0 {
		return 0
	}
	return int(n)
}

func duration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}
