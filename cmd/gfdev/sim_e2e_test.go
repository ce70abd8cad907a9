package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

// TestSimCommand runs `gfdev sim` (the compose `sims` profile) from a
// gerritflow config and drives it as the services and a person would: a
// change created through the admin API reaches Kinesis as the plugin writes
// it; Jenkins, through the project's gojenkins adapter, has the configured
// job with GERRITFLOW_BUILD_ID, takes only the configured token and fails a
// "[fail]" change's build; Gerrit, through go-gerrit, takes the vote on that
// revision and the admin API shows it; SIGTERM (ctx) stops it cleanly.
func TestSimCommand(t *testing.T) {
	em := kinesislocal.StartT(t, map[string]int{"gerrit-events": 1})
	jenkinsAddr, gerritAddr := servicetest.FreeAddr(t), servicetest.FreeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "gerritflow.yaml")
	cfg := fmt.Sprintf(`nats: { url: nats://127.0.0.1:4222 }
kinesis: { stream: gerrit-events, region: us-east-1, endpoint: %q, access_key_env: AWS_ACCESS_KEY_ID, secret_key_env: AWS_SECRET_ACCESS_KEY }
jenkins: { url: "http://%s", user: ci, token_env: JENKINS_TOKEN }
gerrit:  { url: "http://%s/", user: ci, password_env: GERRIT_HTTP_PASSWORD }
jobs:
  - name: unit
    jenkins_job: folder/unit-tests
    events: [ { type: patchset-created } ]
    projects: [ "platform/core" ]
  - name: unit-again
    jenkins_job: folder/unit-tests
    events: [ { type: comment-added, comment: '(?mi)^\s*recheck\s*$' } ]
    projects: [ "glob:**" ]
`, em.Endpoint(), jenkinsAddr, gerritAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"JENKINS_TOKEN": "sim-token-123", "GERRIT_HTTP_PASSWORD": "sim-password-456",
		"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
	getenv := func(k string) string { return env[k] }

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	simCtx, stopSim := context.WithCancel(ctx)
	var out servicetest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runSim(simCtx, []string{"--config", cfgPath, "--build-duration", "300ms"}, &out, getenv)
	}()
	gerritURL := "http://" + gerritAddr
	waitHTTP(t, ctx, gerritURL+"/healthz", done)

	// A person uploads a change.
	var created struct {
		Change   int    `json:"change"`
		Patchset int    `json:"patchset"`
		Revision string `json:"revision"`
	}
	postJSON(t, gerritURL+"/sim/changes", `{"project": "platform/core", "subject": "[fail] Drop the null check"}`, http.StatusCreated, &created)
	if created.Change == 0 || created.Patchset != 1 || len(created.Revision) != 40 {
		t.Fatalf("POST /sim/changes = %+v", created)
	}

	// The plugin's record: the event JSON, partitioned by its type.
	rec := findRecord(t, ctx, em.Client(), "gerrit-events", created.Revision)
	if got := aws.ToString(rec.PartitionKey); got != "patchset-created" {
		t.Errorf("record partition key %q; want the event type patchset-created", got)
	}
	var ev struct {
		Type   string `json:"type"`
		Change struct {
			Number  int    `json:"number"`
			Project string `json:"project"`
			URL     string `json:"url"`
		} `json:"change"`
	}
	if err := json.Unmarshal(rec.Data, &ev); err != nil || ev.Type != "patchset-created" || ev.Change.Number != created.Change || ev.Change.Project != "platform/core" {
		t.Errorf("record data %s (%v); want the patchset-created event of change %d", rec.Data, err, created.Change)
	}
	if want := fmt.Sprintf("%s/c/platform/core/+/%d", gerritURL, created.Change); ev.Change.URL != want {
		t.Errorf("change.url %q; want %q (gerrit.url of the config)", ev.Change.URL, want)
	}

	// Jenkins as the trigger and the monitor see it.
	if _, err := jenkins.New(ctx, "http://"+jenkinsAddr, "ci", "wrong-token", nil); err == nil {
		t.Errorf("Jenkins accepted a token other than $JENKINS_TOKEN")
	}
	jc, err := jenkins.New(ctx, "http://"+jenkinsAddr, "ci", env["JENKINS_TOKEN"], nil)
	if err != nil {
		t.Fatal(err)
	}
	params, err := jc.JobParameters(ctx, "folder/unit-tests")
	if err != nil || !contains(params, "GERRITFLOW_BUILD_ID") || !contains(params, "GERRIT_PATCHSET_REVISION") {
		t.Fatalf("job folder/unit-tests declares %v (%v); want GERRITFLOW_BUILD_ID and the GERRIT_* family", params, err)
	}
	qid, err := jc.Build(ctx, "folder/unit-tests", map[string]string{"GERRITFLOW_BUILD_ID": "sim-test-1",
		"GERRIT_CHANGE_SUBJECT": "[fail] Drop the null check", "GERRIT_CHANGE_NUMBER": fmt.Sprint(created.Change)})
	if err != nil {
		t.Fatal(err)
	}
	result := waitResult(t, ctx, jc, qid)
	if result != "FAILURE" {
		t.Errorf("a [fail] change's build ended %s; want FAILURE", result)
	}

	// The voter's review, through go-gerrit, shows in the admin API.
	gc, err := gerrit.New(ctx, gerritURL, "ci", config.Secret(env["GERRIT_HTTP_PASSWORD"]), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := gc.Review(ctx, "platform/core", created.Change, created.Revision, gerrit.Review{Message: "Build failed", Labels: map[string]int{"Verified": -1}, Tag: "autogenerated:gerritflow"}); err != nil {
		t.Fatal(err)
	}
	var reviews []struct {
		Revision string         `json:"revision"`
		Labels   map[string]int `json:"labels"`
	}
	getJSON(t, fmt.Sprintf("%s/sim/changes/%d/reviews", gerritURL, created.Change), &reviews)
	if len(reviews) != 1 || reviews[0].Revision != created.Revision || reviews[0].Labels["Verified"] != -1 {
		t.Errorf("reviews of change %d = %+v; want one Verified -1 on %s", created.Change, reviews, created.Revision)
	}
	bad, err := gerrit.New(ctx, gerritURL, "ci", config.Secret("not-the-password"), nil)
	if err == nil {
		err = bad.Review(ctx, "platform/core", created.Change, created.Revision, gerrit.Review{Labels: map[string]int{"Verified": 1}})
	}
	if err == nil {
		t.Errorf("Gerrit accepted a review with a password other than $GERRIT_HTTP_PASSWORD")
	}

	stopSim()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("gfdev sim ended with %v; want a clean stop", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gfdev sim did not stop within 20s of its signal")
	}
	for _, secret := range []string{env["JENKINS_TOKEN"], env["GERRIT_HTTP_PASSWORD"]} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("gfdev sim printed a secret:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "curl -X POST "+gerritURL+"/sim/changes") || !strings.Contains(out.String(), "events written to Kinesis") {
		t.Errorf("gfdev sim output lacks its addresses or its summary:\n%s", out.String())
	}
}

// TestSimCommandRefusesBadConfig: a config without the token variable set
// stops the command at start, naming the key.
func TestSimCommandRefusesBadConfig(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "gerritflow.yaml")
	if err := os.WriteFile(cfgPath, []byte(`jenkins: { url: "http://127.0.0.1:1", user: ci, token_env: JENKINS_TOKEN }
gerrit: { url: "http://127.0.0.1:2", user: ci, password_env: GERRIT_HTTP_PASSWORD }
jobs: [ { name: unit, jenkins_job: unit, events: [ { type: patchset-created } ], projects: [ "glob:**" ] } ]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runSim(context.Background(), []string{"--config", cfgPath}, io.Discard, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "jenkins.token_env") {
		t.Errorf("gfdev sim with $JENKINS_TOKEN unset = %v; want an error naming jenkins.token_env", err)
	}
	if err := runSim(context.Background(), nil, io.Discard, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("gfdev sim without a config = %v; want an error asking for --config", err)
	}
}

func waitHTTP(t *testing.T, ctx context.Context, url string, done <-chan error) {
	t.Helper()
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("gfdev sim ended before serving %s: %v", url, err)
		case <-ctx.Done():
			t.Fatalf("%s: no answer: %v", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func postJSON(t *testing.T, url, body string, want int, v any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s = %d %s; want %d", url, resp.StatusCode, data, want)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("POST %s: %v in %s", url, err, data)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, data)
	}
}

// findRecord reads every shard of stream from its start until a record
// holds needle.
func findRecord(t *testing.T, ctx context.Context, kc *kinesis.Client, stream, needle string) types.Record {
	t.Helper()
	shards, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(stream), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for i := 0; i < 20 && iter != nil; i++ {
			out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range out.Records {
				if bytes.Contains(r.Data, []byte(needle)) && strings.Contains(aws.ToString(r.PartitionKey), "patchset") {
					return r
				}
			}
			iter = out.NextShardIterator
			if len(out.Records) == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	t.Fatalf("no record in %s holds %s", stream, needle)
	return types.Record{}
}

// waitResult follows a queue item to its build's result.
func waitResult(t *testing.T, ctx context.Context, jc *jenkins.Client, qid int64) string {
	t.Helper()
	for {
		it, err := jc.QueueItem(ctx, qid)
		if err != nil {
			t.Fatal(err)
		}
		if it.BuildNumber > 0 {
			b, err := jc.GetBuild(ctx, "folder/unit-tests", it.BuildNumber)
			if err != nil {
				t.Fatal(err)
			}
			if !b.Building && b.Result != "" {
				return b.Result
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queue item %d: no result: %v", qid, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
