package kube

// Istio ambient: a pod is captured by its node's ztunnel, which takes HBONE for it on
// port 15008, when its namespace is labelled istio.io/dataplane-mode=ambient and the pod
// does not opt out (istio.io/dataplane-mode=none on the pod); a pod labelled ambient is
// captured in any namespace. Such endpoints are exported with hbonePort 15008 (podPolicy,
// pods.go).
const (
	LabelDataplaneMode   = "istio.io/dataplane-mode"
	DataplaneModeAmbient = "ambient"
	DataplaneModeNone    = "none"
	// AmbientHBONEPort is where ztunnel accepts HBONE for the pods it captures.
	AmbientHBONEPort = 15008
)
