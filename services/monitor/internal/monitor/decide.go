package monitor

import (
	"errors"
	"fmt"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
)

// Settings tune the monitor; SettingsFrom reads them from the config.
type Settings struct {
	// PollInterval is how often a queued item is polled, and the shortest
	// interval of a running build (monitor.poll_interval, default 2s).
	PollInterval time.Duration
	// MaxPollInterval is the longest interval of a running build
	// (monitor.max_poll_interval, default 30s).
	MaxPollInterval time.Duration
	// BuildTimeout stops a build running longer, with result TIMED_OUT
	// (monitor.build_timeout, default 0: none). It counts from the build's
	// start, not from its time in the queue.
	BuildTimeout time.Duration
	// RequestsPerSecond and MaxConcurrent bound this replica's Jenkins calls
	// (jenkins.requests_per_second, default 20; jenkins.max_concurrent, default 8).
	RequestsPerSecond float64
	MaxConcurrent     int
	// LostAfter is how many polls in a row Jenkins must not know a queue item
	// (nor find it by GERRITFLOW_BUILD_ID) or a build before it is LOST (3).
	LostAfter int
}

// Defaults of Settings.
const (
	DefaultPollInterval      = 2 * time.Second
	DefaultMaxPollInterval   = 30 * time.Second
	DefaultRequestsPerSecond = 20
	DefaultMaxConcurrent     = 8
	DefaultLostAfter         = 3
)

// SettingsFrom reads the monitor's settings from cfg; errors name the key.
func SettingsFrom(cfg *config.Config) (Settings, error) {
	s := Settings{
		PollInterval:      cfg.Monitor.PollInterval.Or(DefaultPollInterval),
		MaxPollInterval:   cfg.Monitor.MaxPollInterval.Or(DefaultMaxPollInterval),
		BuildTimeout:      cfg.Monitor.BuildTimeout.D(),
		RequestsPerSecond: cfg.Jenkins.RequestsPerSecond,
		MaxConcurrent:     cfg.Jenkins.MaxConcurrent,
		LostAfter:         DefaultLostAfter,
	}
	if s.RequestsPerSecond == 0 {
		s.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if s.MaxConcurrent == 0 {
		s.MaxConcurrent = DefaultMaxConcurrent
	}
	var errs []error
	if s.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("monitor.poll_interval: %s must be positive", s.PollInterval))
	}
	if s.MaxPollInterval < 0 {
		errs = append(errs, fmt.Errorf("monitor.max_poll_interval: %s must be positive", s.MaxPollInterval))
	} else if s.MaxPollInterval < s.PollInterval {
		errs = append(errs, fmt.Errorf("monitor.max_poll_interval: %s is shorter than monitor.poll_interval %s", s.MaxPollInterval, s.PollInterval))
	}
	if s.BuildTimeout < 0 {
		errs = append(errs, fmt.Errorf("monitor.build_timeout: %s must not be negative (0 means none)", s.BuildTimeout))
	}
	if s.RequestsPerSecond < 0 {
		errs = append(errs, errors.New("jenkins.requests_per_second: must not be negative"))
	}
	if s.MaxConcurrent < 0 {
		errs = append(errs, errors.New("jenkins.max_concurrent: must not be negative"))
	}
	return s, errors.Join(errs...)
}

// RunningPoll is how long to wait before polling running build b again: a
// quarter of its estimated remaining time, so long builds are polled rarely
// and the poll comes closer as the estimated end nears; without an estimate
// a quarter of the time it has run (backing off for long builds). Always
// within [PollInterval, MaxPollInterval], at PollInterval once the estimate
// is overrun, and never past the build timeout.
func (s Settings) RunningPoll(b jenkins.Build, now time.Time) time.Duration {
	elapsed := runFor(b, now)
	var d time.Duration
	switch {
	case b.EstimatedDuration <= 0:
		d = elapsed / 4
	case b.EstimatedDuration > elapsed:
		d = (b.EstimatedDuration - elapsed) / 4
	default: // overdue: it may end any moment
		d = s.PollInterval
	}
	d = min(max(d, s.PollInterval), s.MaxPollInterval)
	if s.BuildTimeout > 0 {
		if left := s.BuildTimeout - elapsed; left > 0 && left < d {
			d = left
		}
	}
	return d
}

// ErrorBackoff is the wait after the errs-th failed poll in a row:
// PollInterval doubled per failure, at most MaxPollInterval.
func (s Settings) ErrorBackoff(errs int) time.Duration {
	d := s.PollInterval
	for i := 1; i < errs && d < s.MaxPollInterval; i++ {
		d *= 2
	}
	return min(d, s.MaxPollInterval)
}

// runFor is how long b has run at now (0 when Jenkins gave no start time).
func runFor(b jenkins.Build, now time.Time) time.Duration {
	if b.Timestamp.Unix() <= 0 {
		return 0
	}
	return max(now.Sub(b.Timestamp), 0)
}

// Overtime reports whether running build b has exceeded the build timeout.
func (s Settings) Overtime(b jenkins.Build, now time.Time) bool {
	return s.BuildTimeout > 0 && runFor(b, now) >= s.BuildTimeout
}

// Finished is the outcome of finished build b. It timed out if the monitor
// stopped it for the build timeout, or (when another replica did, before it
// handed the build over) if it was aborted after running that long.
func (s Settings) Finished(b jenkins.Build, stopped bool) Outcome {
	timedOut := stopped || s.BuildTimeout > 0 && b.Duration >= s.BuildTimeout
	return Outcome{Result: b.Result, TimedOut: timedOut}
}

// Outcome is how a build ended, as the monitor saw it in Jenkins.
type Outcome struct {
	Result         string // Jenkins' result of a finished build
	QueueCancelled bool   // the queue item was cancelled: no build
	Lost           bool   // Jenkins no longer knows the item or the build
	TimedOut       bool   // gerritflow stopped it after monitor.build_timeout
}

// FinalResult is the result the monitor reports. A build cancelled or aborted
// after gerritflow asked for it (the record holds a cancel reason) is
// CANCELED; one aborted after its build timeout is TIMED_OUT; a queue item
// cancelled by someone else is NOT_BUILT; everything else is what Jenkins says.
func FinalResult(o Outcome, cancelRequested bool) string {
	aborted := o.QueueCancelled || o.Result == build.ResultAborted
	switch {
	case o.Lost:
		return build.ResultLost
	case aborted && cancelRequested:
		return build.ResultCanceled
	case o.Result == build.ResultAborted && o.TimedOut:
		return build.ResultTimedOut
	case o.QueueCancelled:
		return build.ResultNotBuilt
	case o.Result == "":
		return build.ResultLost
	}
	return o.Result
}
