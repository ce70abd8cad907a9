package monitor

import (
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
)

var defaults = Settings{PollInterval: 2 * time.Second, MaxPollInterval: 30 * time.Second, LostAfter: 3}

func TestRunningPoll(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	running := func(elapsed, estimate time.Duration) jenkins.Build {
		return jenkins.Build{Number: 1, Building: true, Timestamp: now.Add(-elapsed), EstimatedDuration: estimate}
	}
	withTimeout := defaults
	withTimeout.BuildTimeout = 10 * time.Minute
	tests := []struct {
		name string
		set  Settings
		b    jenkins.Build
		want time.Duration
	}{
		{"long build far from its end backs off to the maximum", defaults, running(time.Minute, time.Hour), 30 * time.Second},
		{"a quarter of the remaining estimate", defaults, running(10*time.Minute, 11*time.Minute), 15 * time.Second},
		{"near the estimated end polls at the base interval", defaults, running(10*time.Minute, 10*time.Minute+4*time.Second), 2 * time.Second},
		{"overrun estimate polls at the base interval", defaults, running(time.Hour, 10*time.Minute), 2 * time.Second},
		{"no estimate, just started", defaults, running(time.Second, 0), 2 * time.Second},
		{"no estimate, running long backs off", defaults, running(time.Minute, 0), 15 * time.Second},
		{"no estimate, running very long", defaults, running(time.Hour, 0), 30 * time.Second},
		{"never sleeps past the build timeout", withTimeout, running(9*time.Minute+50*time.Second, time.Hour), 10 * time.Second},
		{"unknown start time counts as just started", defaults, jenkins.Build{Building: true, Timestamp: time.UnixMilli(0)}, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.set.RunningPoll(tt.b, now); got != tt.want {
				t.Errorf("RunningPoll(elapsed %v, estimate %v) = %v; want %v", now.Sub(tt.b.Timestamp), tt.b.EstimatedDuration, got, tt.want)
			}
		})
	}
}

func TestErrorBackoff(t *testing.T) {
	for errs, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 4: 16 * time.Second, 5: 30 * time.Second, 50: 30 * time.Second} {
		if got := defaults.ErrorBackoff(errs); got != want {
			t.Errorf("ErrorBackoff(%d) = %v; want %v", errs, got, want)
		}
	}
}

func TestOvertimeAndFinished(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	set := defaults
	set.BuildTimeout = time.Minute
	b := jenkins.Build{Number: 1, Building: true, Timestamp: now.Add(-61 * time.Second)}
	if !set.Overtime(b, now) {
		t.Error("Overtime after 61s with a 1m timeout = false; want true")
	}
	if defaults.Overtime(b, now) {
		t.Error("Overtime without a timeout = true; want false")
	}
	if set.Overtime(jenkins.Build{Timestamp: time.UnixMilli(0)}, now) {
		t.Error("Overtime of a build without start time = true; want false")
	}
	aborted := jenkins.Build{Number: 1, Result: build.ResultAborted, Duration: 61 * time.Second}
	if o := set.Finished(aborted, false); !o.TimedOut {
		t.Error("Finished(aborted after the timeout, taken over) not timed out; want timed out")
	}
	aborted.Duration = 5 * time.Second
	if o := set.Finished(aborted, false); o.TimedOut {
		t.Error("Finished(aborted early) timed out; want not")
	}
	if o := set.Finished(aborted, true); !o.TimedOut {
		t.Error("Finished(stopped by us) not timed out; want timed out")
	}
}

func TestFinalResult(t *testing.T) {
	tests := []struct {
		name   string
		o      Outcome
		cancel bool
		want   string
	}{
		{"success", Outcome{Result: "SUCCESS"}, false, build.ResultSuccess},
		{"success despite a late cancel", Outcome{Result: "SUCCESS"}, true, build.ResultSuccess},
		{"failure", Outcome{Result: "FAILURE"}, false, build.ResultFailure},
		{"unstable", Outcome{Result: "UNSTABLE"}, false, build.ResultUnstable},
		{"aborted by someone", Outcome{Result: "ABORTED"}, false, build.ResultAborted},
		{"aborted after our cancel", Outcome{Result: "ABORTED"}, true, build.ResultCanceled},
		{"aborted for the timeout", Outcome{Result: "ABORTED", TimedOut: true}, false, build.ResultTimedOut},
		{"queue item cancelled in Jenkins", Outcome{QueueCancelled: true}, false, build.ResultNotBuilt},
		{"queue item cancelled by us", Outcome{QueueCancelled: true}, true, build.ResultCanceled},
		{"build result NOT_BUILT", Outcome{Result: "NOT_BUILT"}, false, build.ResultNotBuilt},
		{"lost", Outcome{Lost: true}, true, build.ResultLost},
		{"no result at all", Outcome{}, false, build.ResultLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FinalResult(tt.o, tt.cancel); got != tt.want {
				t.Errorf("FinalResult(%+v, cancel %v) = %s; want %s", tt.o, tt.cancel, got, tt.want)
			}
		})
	}
}

func TestSettingsFrom(t *testing.T) {
	var cfg config.Config
	got, err := SettingsFrom(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{PollInterval: 2 * time.Second, MaxPollInterval: 30 * time.Second, RequestsPerSecond: 20, MaxConcurrent: 8, LostAfter: 3}
	if got != want {
		t.Errorf("SettingsFrom(empty) = %+v; want %+v", got, want)
	}
	for _, tt := range []struct {
		name, key string
		mod       func(*config.Config)
	}{
		{"negative poll", "monitor.poll_interval", func(c *config.Config) { c.Monitor.PollInterval = config.Duration(-time.Second) }},
		{"max below poll", "monitor.max_poll_interval", func(c *config.Config) {
			c.Monitor.PollInterval, c.Monitor.MaxPollInterval = config.Duration(time.Minute), config.Duration(time.Second)
		}},
		{"negative timeout", "monitor.build_timeout", func(c *config.Config) { c.Monitor.BuildTimeout = config.Duration(-time.Second) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c config.Config
			tt.mod(&c)
			if _, err := SettingsFrom(&c); err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("SettingsFrom = %v; want an error naming %s", err, tt.key)
			}
		})
	}
}
