package bridge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// metrics of the bridge, gerritflow_bridge_*.
type metrics struct {
	recordsIn, bytesIn, msgsOut, bytesOut prometheus.Counter
	behind, cpLag                         *prometheus.GaugeVec
	leases                                prometheus.Gauge
	leasesLost, duplicates, fallbacks     prometheus.Counter
	publishRetries, checkpoints, trimmed  prometheus.Counter
	dlq, kinesisErrors                    *prometheus.CounterVec
}

func newMetrics(tel *telemetry.Telemetry) *metrics {
	one := func(v *prometheus.CounterVec) prometheus.Counter { return v.WithLabelValues() }
	return &metrics{
		recordsIn:      one(tel.Counter("records_in_total", "Kinesis records read.")),
		bytesIn:        one(tel.Counter("bytes_in_total", "Bytes of Kinesis record data read.")),
		msgsOut:        one(tel.Counter("records_out_total", "Messages published on gerrit.raw and PubAcked (KPL user records count one each).")),
		bytesOut:       one(tel.Counter("bytes_out_total", "Bytes of message data PubAcked on gerrit.raw.")),
		behind:         tel.Gauge("millis_behind_latest", "Kinesis MillisBehindLatest of the last GetRecords, per shard held.", "shard"),
		cpLag:          tel.Gauge("checkpoint_lag_records", "Records read but not yet covered by the checkpoint, per shard held.", "shard"),
		leases:         tel.Gauge("leases_held", "Shard leases this replica holds.").WithLabelValues(),
		leasesLost:     one(tel.Counter("leases_lost_total", "Leases lost to another replica or not renewed in time.")),
		duplicates:     one(tel.Counter("puback_duplicates_total", "PubAcks that reported a duplicate (already published: success).")),
		fallbacks:      one(tel.Counter("iterator_fallbacks_total", "Checkpoints whose iterator request was rejected; read from the configured start instead.")),
		publishRetries: one(tel.Counter("publish_retries_total", "Publishes retried after a transient failure.")),
		checkpoints:    one(tel.Counter("checkpoints_total", "Checkpoints written.")),
		trimmed:        one(tel.Counter("trimmed_checkpoints_deleted_total", "SHARD_END checkpoints deleted because Kinesis no longer lists their shard.")),
		dlq:            tel.Counter("dlq_total", "Records sent to gerritflow.dlq.bridge, by reason.", "reason"),
		kinesisErrors:  tel.Counter("kinesis_errors_total", "Kinesis call errors, by kind (throttled, expired_iterator, other).", "kind"),
	}
}
