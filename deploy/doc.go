// Package deploy holds meshfed's Kubernetes deployment: the Helm chart (helm/meshfed), the
// kustomize base, components and overlays (kustomize/), the MCS CRDs (crds/), and the
// Prometheus alerts and Grafana dashboard (monitoring/). It has no Go code: its tests render
// the chart and the kustomizations with real helm and kustomize binaries (built from the Go
// module proxy by hack/tools/ensure.sh), check what they render, and apply every object to a
// real kube-apiserver with a server-side dry run. See docs/deploy.md.
package deploy
