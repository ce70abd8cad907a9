package monitor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
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

// maxNotification bounds a notification's body (the plugin may attach a log).
const maxNotification = 1 << 20

// ServeNotify handles POST /jenkins/notify. A COMPLETED or FINALIZED
// notification for a build this replica follows (matched by its
// GERRITFLOW_BUILD_ID parameter, else by queue id) polls that build now;
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
		// Another replica may follow it (the plugin reaches one replica);
		// polling finds the end there.
		m.notices.WithLabelValues("unknown").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	m.notices.WithLabelValues("polled").Inc()
	m.log.DebugContext(r.Context(), "notification: polling now", "build_id", id, "queue_id", n.Build.QueueID,
		"number", n.Build.Number, "phase", n.Build.Phase, telemetry.KeyJob, n.Name)
	w.WriteHeader(http.StatusAccepted)
}
