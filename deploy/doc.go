// Package deploy holds no code of its own: its tests check the deployment
// files beside it (docker-compose.yml at the repository root, Dockerfiles,
// Kubernetes manifests, the NATS server configuration) with the libraries
// their tools use.
package deploy
