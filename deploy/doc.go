// Package deploy holds gerritflow's deployment files and their tests: the
// image recipe (docker/), the compose config (compose/ and the repository's
// docker-compose.yml), the Kubernetes manifests (k8s/), the NATS server
// configuration with least-privilege users (nats/). The tests check them with
// the libraries their tools use (compose-go, kustomize, the Kubernetes API
// types, nats-server's config parser) and run a real nats-server with the
// users. Its one piece of code, NACK, renders streams/ as NATS JetStream
// controller resources (k8s/nack/nack.yaml).
package deploy
