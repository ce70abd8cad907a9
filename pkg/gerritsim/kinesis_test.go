package gerritsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
)

// fakeKinesis answers PutRecord as Kinesis does (JSON 1.1 protocol), for
// one stream, and keeps what it was sent. It only proves the request shape;
// the pipeline's tests use the real emulator.
type fakeKinesis struct {
	t      *testing.T
	stream string

	mu      sync.Mutex
	records []putRecord
}

type putRecord struct {
	StreamName   string
	PartitionKey string
	Data         []byte // base64 on the wire; encoding/json decodes it
}

func (k *fakeKinesis) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if got := r.Header.Get("X-Amz-Target"); got != "Kinesis_20131202.PutRecord" {
		k.t.Errorf("X-Amz-Target = %q; want Kinesis_20131202.PutRecord", got)
	}
	if got := r.Header.Get("Content-Type"); got != "application/x-amz-json-1.1" {
		k.t.Errorf("Content-Type = %q; want application/x-amz-json-1.1", got)
	}
	if got := r.Header.Get("Authorization"); !strings.HasPrefix(got, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") {
		k.t.Errorf("Authorization = %q; want a SigV4 signature", got)
	}
	var in putRecord
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		k.t.Errorf("PutRecord body: %v", err)
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if in.StreamName != k.stream {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"__type":"ResourceNotFoundException","message":"Stream %s under account 000000000000 not found."}`, in.StreamName)
		return
	}
	k.mu.Lock()
	k.records = append(k.records, in)
	seq := len(k.records)
	k.mu.Unlock()
	fmt.Fprintf(w, `{"ShardId":"shardId-000000000000","SequenceNumber":"4959%052d","EncryptionType":"NONE"}`, seq)
}

func (k *fakeKinesis) all() []putRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]putRecord(nil), k.records...)
}

func startKinesis(t *testing.T, stream string) (*fakeKinesis, *kinesis.Client) {
	k := &fakeKinesis{t: t, stream: stream}
	srv := httptest.NewServer(k)
	t.Cleanup(srv.Close)
	client := kinesis.New(kinesis.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	return k, client
}

func TestPutEvent(t *testing.T) {
	k, client := startKinesis(t, "gerrit-events")
	data := []byte(`{"type":"comment-added","comment":"Patch Set 1:\n\nrecheck"}`)
	shard, seq, err := gerritsim.PutEvent(t.Context(), client, "gerrit-events", "comment-added", data)
	if err != nil {
		t.Fatalf("PutEvent: %v", err)
	}
	if shard != "shardId-000000000000" || !strings.HasPrefix(seq, "4959") {
		t.Errorf("PutEvent = %q, %q; want the shard and sequence Kinesis answered", shard, seq)
	}
	got := k.all()
	if len(got) != 1 || got[0].PartitionKey != "comment-added" || string(got[0].Data) != string(data) {
		t.Errorf("records = %+v; want one with partition key comment-added and the exact data", got)
	}
	if _, _, err := gerritsim.PutEvent(t.Context(), client, "missing", "comment-added", data); err == nil || !strings.Contains(err.Error(), "ResourceNotFoundException") {
		t.Errorf("PutEvent(missing stream) = %v; want ResourceNotFoundException", err)
	}
}

func TestKinesisSink(t *testing.T) {
	k, client := startKinesis(t, "gerrit-events")
	g := gerritsim.Start(t)
	g.OnEvent(gerritsim.KinesisSink(t.Context(), client, "gerrit-events", func(err error) { t.Errorf("sink: %v", err) }))

	n, _, created, err := g.Upload(gerritsim.Upload{Project: project})
	if err != nil {
		t.Fatal(err)
	}
	comment, err := g.Comment(n, 1, gerritsim.DefaultUploader, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := k.all()
	var keys []string
	for _, r := range got {
		keys = append(keys, r.PartitionKey)
		if typ := get(decode(t, r.Data), "type"); typ != r.PartitionKey {
			t.Errorf("record with partition key %s holds a %v event", r.PartitionKey, typ)
		}
	}
	if want := "ref-updated,patchset-created,ref-updated,comment-added"; strings.Join(keys, ",") != want {
		t.Fatalf("partition keys = %s; want %s", strings.Join(keys, ","), want)
	}
	if string(got[1].Data) != string(created) || string(got[3].Data) != string(comment) {
		t.Errorf("record data differs from the events Upload and Comment returned")
	}

	var errs []error
	bad := gerritsim.KinesisSink(t.Context(), client, "missing", func(err error) { errs = append(errs, err) })
	bad("patchset-created", created)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "missing") {
		t.Errorf("sink errors = %v; want one naming the stream", errs)
	}
	gerritsim.KinesisSink(t.Context(), client, "missing", nil)("patchset-created", created) // nil errs: no panic
}
