package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

const jobsYAML = `
jobs:
  - name: unit
    jenkins_job: folder/unit-tests
    events: [ { type: patchset-created } ]
    projects: [ "platform/core" ]
`

func TestRunServesReadyAndDrains(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	jk := jenkinssim.Start(t)
	jk.AddJob("folder/unit-tests", "GERRITFLOW_BUILD_ID")
	addr := servicetest.FreeAddr(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\nlisten: { trigger: %q }\njenkins: { url: %q, user: ci, token_env: JT }\n%s",
		srv.URL(), addr, jk.URL(), jobsYAML))
	stop := servicetest.Start(t, run, []string{"--config", cfg}, servicetest.Env(map[string]string{"JT": jk.Token()}), addr)
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil", err)
	}
}

func TestRunRefusesJobWithoutBuildIDAndMissingToken(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	jk := jenkinssim.Start(t)
	jk.AddJob("folder/unit-tests", "GERRIT_PROJECT")
	cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\njenkins: { url: %q, user: ci, token_env: JT }\n%s", srv.URL(), jk.URL(), jobsYAML))
	err := run(context.Background(), []string{"--config", cfg}, servicetest.Env(map[string]string{"JT": jk.Token()}))
	if err == nil || !strings.Contains(err.Error(), "folder/unit-tests does not declare the string parameter GERRITFLOW_BUILD_ID") {
		t.Errorf("run = %v; want a refusal naming the job", err)
	}
	err = run(context.Background(), []string{"--config", cfg}, servicetest.Env(nil))
	if err == nil || !strings.Contains(err.Error(), "jenkins.token_env") {
		t.Errorf("run without token = %v; want an error naming jenkins.token_env", err)
	}
}
