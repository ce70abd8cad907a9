package chaos

import (
	"bufio"
	"encoding/json"
	"os"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
)

// A recovery path of a service, found in its JSON log by message (and decision).
type recoveryPath struct {
	service, msg, decision, what string
}

// recoveryPaths are the code paths that exist for faults: the report counts
// how often each ran, so that a run shows the faults hit the windows that
// matter (a crash between "asked Jenkins" and "recorded it", a claim of a
// dead voter, ...), not only that nothing broke.
var recoveryPaths = []recoveryPath{
	{"bridge", "lease acquired", "", "bridge: shard lease acquired (start, take-over of a dead replica's shard)"},
	{"bridge", "lease renewal lost its compare-and-set; stopped reading", "", "bridge: lost a lease to another replica, stopped reading"},
	{"parser", "dead-lettered", "", "parser: record dead-lettered"},
	{"trigger", "build found after restart", "", "trigger: build started before a crash found by GERRITFLOW_BUILD_ID"},
	{"trigger", "concurrent start: cancelling the duplicate", "", "trigger: racing delivery's duplicate queue item cancelled"},
	{"monitor", "decision", "announce", "monitor: completed build announced again on redelivery"},
	{"monitor", "decision", "recover", "monitor: forgotten queue item's build found by GERRITFLOW_BUILD_ID"},
	{"monitor", "released unfinished work to other replicas", "", "monitor: builds handed back to the other replica at shutdown"},
	{"monitor", "poll failed; will retry", "", "monitor: Jenkins poll failed, retried"},
	{"voter", "vote claim taken over", "", "voter: claim of a dead replica taken over"},
	{"voter", "vote found on Gerrit", "", "voter: review posted before a crash found by its marker"},
	{"voter", "", "duplicate", "voter: vote already settled, not posted again"},
	{"", "will retry", "", "any stage: delivery failed, redelivered with backoff"},
	{"", "consume", "", "any stage: pull interrupted (NATS restart), resumed"},
}

// PathCount is how often one recovery path ran.
type PathCount struct {
	What  string
	Count int
}

// recoveries counts the recovery paths in every service process's log.
func recoveries(s *stack.Stack) []PathCount {
	counts := make([]int, len(recoveryPaths))
	for _, name := range stack.Services {
		for _, p := range s.Procs(name) {
			f, err := os.Open(p.LogPath())
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			for sc.Scan() {
				var line struct {
					Service  string `json:"service"`
					Msg      string `json:"msg"`
					Decision string `json:"decision"`
				}
				if json.Unmarshal(sc.Bytes(), &line) != nil {
					continue
				}
				for i, rp := range recoveryPaths {
					if (rp.service == "" || rp.service == line.Service) && (rp.msg == "" || rp.msg == line.Msg) &&
						(rp.decision == "" || rp.decision == line.Decision) {
						counts[i]++
					}
				}
			}
			f.Close()
		}
	}
	out := make([]PathCount, len(recoveryPaths))
	for i, rp := range recoveryPaths {
		out[i] = PathCount{What: rp.what, Count: counts[i]}
	}
	return out
}
