package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

func TestRunFollowsABuildAndDrains(t *testing.T) {
	srv, js := natstest.JetStream(t)
	jk := jenkinssim.Start(t)
	jk.AddJob("folder/unit-tests", jenkins.BuildIDParam)
	addr := servicetest.FreeAddr(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf(`nats: { url: %q }
listen: { monitor: %q }
jenkins: { url: %q, user: ci, token_env: JT }
monitor: { poll_interval: 20ms, max_poll_interval: 200ms }
`, srv.URL(), addr, jk.URL()))
	stop := servicetest.Start(t, run, []string{"--config", cfg}, servicetest.Env(map[string]string{"JT": jk.Token()}), addr)

	// A build started the way the trigger starts one.
	ctx := t.Context()
	key := subject.BuildKey("1-1-abc", "unit")
	client, err := jenkins.New(ctx, jk.URL(), jk.User(), jk.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	qid, err := client.Build(ctx, "folder/unit-tests", map[string]string{jenkins.BuildIDParam: key})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		t.Fatal(err)
	}
	rec := build.Build{BuildSet: "1-1-abc", Job: "unit", JenkinsJob: "folder/unit-tests", BuildID: key, State: build.StateQueued, QueueID: qid}
	if _, err := kv.Create(ctx, key, build.Encode(rec)); err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(bus.MsgID, key+".triggered")
	tr := build.Triggered{BuildSet: "1-1-abc", Job: "unit", JenkinsJob: "folder/unit-tests", BuildID: key, QueueID: qid, Project: "p", Change: 1, PatchSet: 1}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject.BuildsTriggered, Header: h, Data: build.Encode(tr)}); err != nil {
		t.Fatal(err)
	}
	msgs := natstest.Collect(t, js, subject.BuildsCompleted, 1, 10*time.Second)
	var c build.Completed
	if err := build.Decode(msgs[0].Data(), &c); err != nil {
		t.Fatal(err)
	}
	if c.BuildID != key || c.Result != build.ResultSuccess {
		t.Errorf("completed %s %s; want %s SUCCESS", c.BuildID, c.Result, key)
	}

	resp, err := http.Post("http://"+addr+"/jenkins/notify", "application/json", strings.NewReader("not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /jenkins/notify with a bad body: %d; want 400 (the endpoint is served)", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil", err)
	}
	cons, err := js.Consumer(context.Background(), streams.CIBuilds, "monitor")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("after drain: %d unacked, %d pending; want 0, 0", info.NumAckPending, info.NumPending)
	}
}

func TestRunRefusesBadConfigNamingTheKey(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	jk := jenkinssim.Start(t)
	env := servicetest.Env(map[string]string{"JT": jk.Token()})
	base := fmt.Sprintf("nats: { url: %q }\njenkins: { url: %q, user: ci, token_env: JT }\n", srv.URL(), jk.URL())
	for _, tc := range []struct {
		name, yaml, key string
		env             func(string) string
	}{
		{"max poll below poll", "monitor: { poll_interval: 10s, max_poll_interval: 1s }\n", "monitor.max_poll_interval", env},
		{"negative timeout", "monitor: { build_timeout: -1m }\n", "monitor.build_timeout", env},
		{"unknown key", "monitor: { pol_interval: 1s }\n", "pol_interval", env},
		{"missing token", "monitor: {}\n", "jenkins.token_env", servicetest.Env(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := servicetest.WriteConfig(t, base+tc.yaml)
			err := run(context.Background(), []string{"--config", cfg}, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Errorf("run = %v; want an error naming %s", err, tc.key)
			}
		})
	}
}
