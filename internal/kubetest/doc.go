// Package kubetest starts a real kube-apiserver for tests: an embedded etcd in the test
// process and the kube-apiserver binary named by $MESHFED_KUBE_APISERVER (built and cached by
// hack/testbins/ensure.sh, which `make test` runs). Each APIServer is one simulated
// Kubernetes cluster with its own etcd, certificates, service-account keys and admin token;
// several can run side by side in one test. Without the binary, Start skips the test and says
// how to get it.
//
// No controllers run (no kube-controller-manager): tests create EndpointSlices themselves,
// and garbage collection through ownerReferences does not happen.
package kubetest
