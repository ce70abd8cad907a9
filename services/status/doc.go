// Command status serves gerritflow's live status page: every build set in
// flight and recently finished, from NATS KV watches only.
package main
