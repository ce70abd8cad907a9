package deploy

import (
	"flag"
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite generated files (deploy/k8s/nack/nack.yaml)")

// TestNACKManifest keeps deploy/k8s/nack/nack.yaml equal to what NACK
// generates from streams/: one source of truth for streams, consumers and
// buckets, whether gfctl provision or NACK creates them.
func TestNACKManifest(t *testing.T) {
	got, err := NACK(loadStreams(t), 3)
	if err != nil {
		t.Fatal(err)
	}
	file := path(t, "deploy", "k8s", "nack", "nack.yaml")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("deploy/k8s/nack/nack.yaml is not what deploy.NACK generates from streams/; run: cd deploy && go test -run TestNACKManifest -update")
	}
}

// TestNACKMapsEverySetting decodes the generated resources strictly and
// checks each against its definition in streams/.
func TestNACKMapsEverySetting(t *testing.T) {
	set := loadStreams(t)
	out, err := NACK(set, 3)
	if err != nil {
		t.Fatal(err)
	}
	docs := splitYAML(out)
	if want := len(set.Streams) + len(set.Consumers) + len(set.Buckets); len(docs) != want {
		t.Fatalf("%d documents; want %d", len(docs), want)
	}
	i := 0
	for _, s := range set.Streams {
		var r NACKStream
		if err := yaml.UnmarshalStrict(docs[i], &r); err != nil {
			t.Fatal(err)
		}
		i++
		sp := r.Spec
		if r.Kind != "Stream" || r.APIVersion != NACKAPIVersion || r.Name != NACKName(s.Name) {
			t.Errorf("%s: %s %s named %s", s.Name, r.APIVersion, r.Kind, r.Name)
		}
		if sp.Name != s.Name || sp.Replicas != 3 || sp.MaxAge.Duration != s.MaxAge || sp.DuplicateWindow.Duration != s.Duplicates ||
			sp.Retention != "limits" || sp.Storage != "file" || sp.Discard != "old" || len(sp.Subjects) != len(s.Subjects) ||
			int32(sp.MaxMsgSize) != max(s.MaxMsgSize, 0) || !sp.PreventDelete {
			t.Errorf("stream %s: NACK spec %+v does not match streams/ %+v", s.Name, sp, s)
		}
	}
	for _, c := range set.Consumers {
		var r NACKConsumer
		if err := yaml.UnmarshalStrict(docs[i], &r); err != nil {
			t.Fatal(err)
		}
		i++
		sp, cc := r.Spec, c.Config
		if sp.StreamName != c.Stream || sp.DurableName != cc.Durable || sp.AckPolicy != "explicit" || sp.DeliverPolicy != "all" ||
			sp.AckWait != cc.AckWait.String() || sp.MaxDeliver != cc.MaxDeliver || len(sp.BackOff) != len(cc.BackOff) ||
			sp.MaxAckPending != cc.MaxAckPending || len(sp.FilterSubjects) != len(cc.FilterSubjects) || !sp.PreventDelete {
			t.Errorf("consumer %s: NACK spec %+v does not match streams/ %+v", cc.Durable, sp, cc)
		}
	}
	for _, b := range set.Buckets {
		var r NACKKeyValue
		if err := yaml.UnmarshalStrict(docs[i], &r); err != nil {
			t.Fatal(err)
		}
		i++
		sp := r.Spec
		ttl := ""
		if b.TTL > 0 {
			ttl = b.TTL.String()
		}
		if sp.Bucket != b.Bucket || sp.Replicas != 3 || sp.History != int(b.History) || sp.TTL != ttl || sp.Storage != "file" || !sp.PreventDelete {
			t.Errorf("bucket %s: NACK spec %+v does not match streams/ %+v", b.Bucket, sp, b)
		}
	}
	if _, err := NACK(set, 0); err == nil {
		t.Error("NACK(set, 0) = nil error; want one")
	}
}
