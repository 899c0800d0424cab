// Package helmtest holds the tests of deployments/: the Helm chart is linted, rendered and every rendered
// object is validated by a real kube-apiserver (server-side dry run, internal/kubetest); the committed
// plain manifests are checked against a fresh render; the Grafana dashboard's metric names are checked
// against the metrics the code registers. It has no code of its own.
package helmtest
