package kube

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1a1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// Condition reasons meshfed adds to the MCS API's own (v0.5.2 names the Valid reasons Valid,
// NoService and InvalidServiceType; controllers may add more).
const (
	// ReasonNoExportablePorts: the Service has no TCP port (the east-west gateway carries TLS
	// over TCP only) or no port at all.
	ReasonNoExportablePorts mcsv1a1.ServiceExportConditionReason = "NoExportablePorts"
	// ReasonInvalidService: the Service cannot be expressed as an export record (the message
	// names the field).
	ReasonInvalidService mcsv1a1.ServiceExportConditionReason = "InvalidService"
)

// invalid says why a ServiceExport cannot be exported.
type invalid struct {
	Reason  mcsv1a1.ServiceExportConditionReason
	Message string
}

// buildExport turns a ServiceExport's Service and its EndpointSlices into this cluster's
// export record, or says why it cannot. svc is nil when the Service does not exist. Slices
// are those labelled kubernetes.io/service-name=<svc.Name> in its namespace. It is pure, so
// it is fuzzed directly. notes lists what was left out (non-TCP ports, FQDN endpoints, ...).
// pods says which endpoints Istio ambient captures (they get hbonePort 15008) and the
// service account of each endpoint's pod (serviceAccount).
func buildExport(cluster string, se *mcsv1a1.ServiceExport, svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods podPolicy) (exp *records.Export, inv *invalid, notes []string) {
	if svc == nil {
		return nil, &invalid{mcsv1a1.ServiceExportReasonNoService, fmt.Sprintf("Service %s/%s not found: create it, or delete this ServiceExport", se.Namespace, se.Name)}, nil
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, &invalid{mcsv1a1.ServiceExportReasonInvalidServiceType, fmt.Sprintf("Service %s/%s is of type ExternalName, which cannot be exported (KEP-1645)", svc.Namespace, svc.Name)}, nil
	}
	exp = &records.Export{
		Cluster:         cluster,
		Namespace:       svc.Namespace,
		Name:            svc.Name,
		Type:            records.TypeClusterSetIP,
		SessionAffinity: records.AffinityNone,
		ExportedAt:      se.CreationTimestamp.UTC(),
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		exp.Type = records.TypeHeadless
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		exp.SessionAffinity = records.AffinityClientIP
	}

	// Slices in name order, so that every pass picks the same target port and zone.
	slices = append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })

	for _, sp := range svc.Spec.Ports {
		proto := string(sp.Protocol)
		if proto == "" {
			proto = exports.ProtocolTCP
		}
		if proto != exports.ProtocolTCP {
			notes = append(notes, fmt.Sprintf("port %d/%s left out: the gateway carries TCP only", sp.Port, proto))
			continue
		}
		p := records.Port{Name: sp.Name, Port: sp.Port, Protocol: proto, TargetPort: targetPort(sp, slices)}
		if sp.AppProtocol != nil {
			p.AppProtocol = *sp.AppProtocol
		}
		if p.TargetPort == p.Port {
			p.TargetPort = 0 // the record's default; keeps records equal across clusters
		}
		exp.Ports = append(exp.Ports, p)
	}
	if len(exp.Ports) == 0 {
		msg := fmt.Sprintf("Service %s/%s has no ports", svc.Namespace, svc.Name)
		if len(svc.Spec.Ports) > 0 {
			msg = fmt.Sprintf("Service %s/%s has no TCP port: the east-west gateway carries TLS over TCP only", svc.Namespace, svc.Name)
		}
		return nil, &invalid{ReasonNoExportablePorts, msg}, notes
	}

	byAddr := map[string]int{}
	fqdn := 0
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			fqdn += len(sl.Endpoints)
			continue
		}
		for _, ep := range sl.Endpoints {
			// Kubernetes: consumers use the first address; the others are for the same
			// backend.
			if len(ep.Addresses) == 0 || validate.IP(ep.Addresses[0]) != nil {
				continue
			}
			addr := ep.Addresses[0]
			// Per the EndpointSlice API, a nil ready condition means ready.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			zone := ""
			if ep.Zone != nil && validate.DNSLabel(*ep.Zone) == nil {
				zone = *ep.Zone
			}
			if i, dup := byAddr[addr]; dup {
				// The same backend in two slices (a slice being split or moved): ready if
				// any copy says so.
				exp.Endpoints[i].Ready = exp.Endpoints[i].Ready || ready
				if exp.Endpoints[i].Zone == "" {
					exp.Endpoints[i].Zone = zone
				}
				continue
			}
			byAddr[addr] = len(exp.Endpoints)
			exp.Endpoints = append(exp.Endpoints, records.Endpoint{Address: addr, Zone: zone, Ready: ready, HBONEPort: pods.hbonePort(ep), ServiceAccount: pods.serviceAccount(ep)})
		}
	}
	if fqdn > 0 {
		notes = append(notes, fmt.Sprintf("%d FQDN endpoints left out: the gateway dials IP addresses", fqdn))
	}
	sort.Slice(exp.Endpoints, func(i, j int) bool {
		a, b := exp.Endpoints[i], exp.Endpoints[j]
		if a.Ready != b.Ready {
			return a.Ready // ready ones survive the cap below
		}
		return a.Address < b.Address
	})
	if len(exp.Endpoints) > exports.MaxEndpointsPerService {
		notes = append(notes, fmt.Sprintf("%d endpoints, only the first %d exported", len(exp.Endpoints), exports.MaxEndpointsPerService))
		exp.Endpoints = exp.Endpoints[:exports.MaxEndpointsPerService]
	}
	sort.Slice(exp.Endpoints, func(i, j int) bool { return exp.Endpoints[i].Address < exp.Endpoints[j].Address })
	if exp.Endpoints == nil {
		exp.Endpoints = []records.Endpoint{}
	}

	// The record's own rules (the publisher enforces them too): a failure here is reported
	// on the ServiceExport instead of being dropped by the publisher with only a log line.
	check := *exp
	check.Revision = 1
	if check.ExportedAt.IsZero() {
		check.ExportedAt = metav1.Now().UTC()
	}
	if err := check.Validate(); err != nil {
		return nil, &invalid{ReasonInvalidService, fmt.Sprintf("Service %s/%s cannot be exported: %v", svc.Namespace, svc.Name, err)}, notes
	}
	return exp, nil, notes
}

// targetPort is what the gateway dials on an endpoint for service port sp: the number the
// EndpointSlices give for the port's name (this resolves named target ports), else the
// Service's numeric targetPort, else the port itself.
func targetPort(sp corev1.ServicePort, slices []*discoveryv1.EndpointSlice) int32 {
	for _, sl := range slices {
		for _, p := range sl.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if name == sp.Name && proto == corev1.ProtocolTCP && p.Port != nil && validate.Port(int64(*p.Port)) == nil {
				return *p.Port
			}
		}
	}
	if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal > 0 && validate.Port(int64(sp.TargetPort.IntVal)) == nil {
		return sp.TargetPort.IntVal
	}
	return sp.Port
}

// statusInput is what the conditions depend on beside the export itself, from the view.
type statusInput struct {
	known     bool // the view has this cluster's export of the service (it is in etcd)
	exporters int
	conflicts []view.Conflict
}

func statusFromView(v *view.View, cluster, key string) statusInput {
	if v == nil {
		return statusInput{}
	}
	svc := v.Services[key]
	if svc == nil || svc.Exporter(cluster) == nil {
		return statusInput{}
	}
	return statusInput{known: true, exporters: len(svc.Clusters), conflicts: svc.ConflictsOf(cluster)}
}

func (s statusInput) equal(o statusInput) bool {
	if s.known != o.known || s.exporters != o.exporters || len(s.conflicts) != len(o.conflicts) {
		return false
	}
	for i := range s.conflicts {
		if s.conflicts[i] != o.conflicts[i] {
			return false
		}
	}
	return true
}

// conditions computes the ServiceExport's MCS conditions from the local verdict (inv nil:
// valid) and the view. It returns the new condition list and whether it differs from the
// current one (ignoring LastTransitionTime, which only moves when a status flips). Conditions
// of other types, set by someone else, are kept.
func conditions(cur []metav1.Condition, generation int64, inv *invalid, notes []string, st statusInput) ([]metav1.Condition, bool) {
	out := make([]metav1.Condition, 0, len(cur)+3)
	for _, c := range cur {
		out = append(out, *c.DeepCopy())
	}
	set := func(t mcsv1a1.ServiceExportConditionType, status metav1.ConditionStatus, reason mcsv1a1.ServiceExportConditionReason, msg string) {
		setCondition(&out, metav1.Condition{Type: string(t), Status: status, Reason: string(reason), Message: msg, ObservedGeneration: generation})
	}
	if inv != nil {
		set(mcsv1a1.ServiceExportConditionValid, metav1.ConditionFalse, inv.Reason, inv.Message)
		set(mcsv1a1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1a1.ServiceExportReasonFailed, "not exported: "+inv.Message)
		removeCondition(&out, string(mcsv1a1.ServiceExportConditionConflict))
	} else {
		msg := "the Service can be exported"
		if len(notes) > 0 {
			msg += "; " + strings.Join(notes, "; ")
		}
		set(mcsv1a1.ServiceExportConditionValid, metav1.ConditionTrue, mcsv1a1.ServiceExportReasonValid, msg)
		if st.known {
			set(mcsv1a1.ServiceExportConditionReady, metav1.ConditionTrue, mcsv1a1.ServiceExportReasonExported,
				fmt.Sprintf("exported to the clusterset; %d cluster(s) export this service", st.exporters))
			if len(st.conflicts) == 0 {
				set(mcsv1a1.ServiceExportConditionConflict, metav1.ConditionFalse, mcsv1a1.ServiceExportReasonNoConflicts, "this export agrees with the clusterset's")
			} else {
				reason, msg := conflictText(st.conflicts)
				set(mcsv1a1.ServiceExportConditionConflict, metav1.ConditionTrue, reason, msg)
			}
		} else {
			set(mcsv1a1.ServiceExportConditionReady, metav1.ConditionFalse, mcsv1a1.ServiceExportReasonPending, "waiting for the federation service to publish the export")
			// Until the merge has seen this export, nothing is known about conflicts.
			removeCondition(&out, string(mcsv1a1.ServiceExportConditionConflict))
		}
	}
	return out, !sameConditions(cur, out)
}

// conflictText is the Conflict condition's reason (MCS reasons joined by commas, as the API
// allows for several conflicts) and message.
func conflictText(cs []view.Conflict) (mcsv1a1.ServiceExportConditionReason, string) {
	var reasons []string
	seen := map[string]bool{}
	var msgs []string
	for _, c := range cs {
		r := string(mcsv1a1.ServiceExportReasonPortConflict)
		switch c.Field {
		case "type":
			r = string(mcsv1a1.ServiceExportReasonTypeConflict)
		case "sessionAffinity":
			r = string(mcsv1a1.ServiceExportReasonSessionAffinityConflict)
		}
		if !seen[r] {
			seen[r] = true
			reasons = append(reasons, r)
		}
		msgs = append(msgs, c.Message)
	}
	msg := strings.Join(msgs, "; ")
	// metav1.Condition messages are limited to 32768 bytes.
	if len(msg) > 4096 {
		msg = msg[:4096] + " ..."
	}
	return mcsv1a1.ServiceExportConditionReason(strings.Join(reasons, ",")), msg
}

func setCondition(conds *[]metav1.Condition, c metav1.Condition) {
	for i := range *conds {
		cur := &(*conds)[i]
		if cur.Type != c.Type {
			continue
		}
		if cur.Status != c.Status {
			cur.LastTransitionTime = metav1.Now()
		}
		cur.Status, cur.Reason, cur.Message, cur.ObservedGeneration = c.Status, c.Reason, c.Message, c.ObservedGeneration
		return
	}
	c.LastTransitionTime = metav1.Now()
	*conds = append(*conds, c)
}

func removeCondition(conds *[]metav1.Condition, t string) {
	out := (*conds)[:0]
	for _, c := range *conds {
		if c.Type != t {
			out = append(out, c)
		}
	}
	*conds = out
}

func sameConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

// findCondition returns the condition of type t, or nil.
func findCondition(conds []metav1.Condition, t mcsv1a1.ServiceExportConditionType) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == string(t) {
			return &conds[i]
		}
	}
	return nil
}
