package monitor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// Notification is the JSON the Jenkins Notification plugin posts for each
// phase of a build (only the fields the monitor reads).
type Notification struct {
	Name  string `json:"name"`
	URL   string `json:"url"` // job/x/
	Build struct {
		FullURL    string         `json:"full_url"`
		Number     int64          `json:"number"`
		QueueID    int64          `json:"queue_id"`
		Phase      string         `json:"phase"`  // QUEUED STARTED COMPLETED FINALIZED
		Status     string         `json:"status"` // never trusted: the build is read from Jenkins
		Parameters map[string]any `json:"parameters"`
	} `json:"build"`
}

// BuildID is the notification's GERRITFLOW_BUILD_ID parameter ("" if none).
func (n Notification) BuildID() string {
	switch v := n.Build.Parameters[jenkins.BuildIDParam].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// poke is what one replica passes to the others on subject.MonitorPoke.
type poke struct {
	BuildID string `json:"build_id,omitempty"`
	QueueID int64  `json:"queue_id,omitempty"`
}

// SharePokes lets the replicas behind one notification URL share what
// Jenkins pushes: a notification for a build this replica does not follow is
// published on subject.MonitorPoke (core NATS), and a poke from another
// replica for a build this one follows polls it at once. Without it, such a
// build's end is found by the next poll. The subscription ends with nc.
func (m *Monitor) SharePokes(nc *nats.Conn) error {
	_, err := nc.Subscribe(subject.MonitorPoke, func(msg *nats.Msg) {
		var p poke
		if err := json.Unmarshal(msg.Data, &p); err != nil {
			m.log.Warn("poke from another replica: bad body", "error", err)
			return
		}
		if m.poke(p.BuildID, p.QueueID) {
			m.notices.WithLabelValues("polled_for_peer").Inc()
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject.MonitorPoke, err)
	}
	m.mu.Lock()
	m.peers = nc
	m.mu.Unlock()
	return nil
}

// relay passes a notification to the other replicas; false when SharePokes
// was not called or the publish failed.
func (m *Monitor) relay(buildID string, queueID int64) bool {
	m.mu.Lock()
	nc := m.peers
	m.mu.Unlock()
	if nc == nil || (buildID == "" && queueID == 0) {
		return false
	}
	data, _ := json.Marshal(poke{BuildID: buildID, QueueID: queueID})
	if err := nc.Publish(subject.MonitorPoke, data); err != nil {
		m.log.Warn("notification not relayed to the other replicas", "build_id", buildID, "error", err)
		return false
	}
	return true
}

// maxNotification bounds a notification's body (the plugin may attach a log).
const maxNotification = 1 << 20

// ServeNotify handles POST /jenkins/notify. A COMPLETED or FINALIZED
// notification for a build this replica follows (matched by its
// GERRITFLOW_BUILD_ID parameter, else by queue id) polls that build now; one
// for a build it does not follow goes to the other replicas (SharePokes);
// everything else is acknowledged and ignored. The body is a hint only: the
// result is always read from Jenkins, so a forged notification costs one
// poll within the request budget.
func (m *Monitor) ServeNotify(w http.ResponseWriter, r *http.Request) {
	var n Notification
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxNotification)).Decode(&n); err != nil {
		m.notices.WithLabelValues("bad").Inc()
		http.Error(w, "bad notification: "+err.Error(), http.StatusBadRequest)
		return
	}
	switch strings.ToUpper(n.Build.Phase) {
	case "COMPLETED", "FINALIZED":
	default:
		m.notices.WithLabelValues("ignored").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	id := n.BuildID()
	if !m.poke(id, n.Build.QueueID) {
		// The plugin reaches one replica; another one may follow the build.
		if m.relay(id, n.Build.QueueID) {
			m.notices.WithLabelValues("relayed").Inc()
			w.WriteHeader(http.StatusAccepted)
			return
		}
		m.notices.WithLabelValues("unknown").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	m.notices.WithLabelValues("polled").Inc()
	m.log.DebugContext(r.Context(), "notification: polling now", "build_id", id, "queue_id", n.Build.QueueID,
		"number", n.Build.Number, "phase", n.Build.Phase, telemetry.KeyJob, n.Name)
	w.WriteHeader(http.StatusAccepted)
}
