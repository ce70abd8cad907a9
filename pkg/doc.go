// Package pkg is the root of the module that holds what two or more gerritflow
// modules share: the event model, subject names, the NATS consumer loop,
// config, telemetry, the Jenkins adapter and the test doubles.
package pkg
