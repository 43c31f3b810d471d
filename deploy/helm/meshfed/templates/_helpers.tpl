{{/* Object names: fixed, so that the kustomize base renders the same objects. */}}
{{- define "meshfed.labels" -}}
app.kubernetes.io/name: meshfed
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: meshfed
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "meshfed.selector" -}}
app.kubernetes.io/name: meshfed
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "meshfed.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Restricted Pod Security profile: non-root, no privilege escalation, no capabilities,
     read-only root filesystem, RuntimeDefault seccomp. */}}
{{- define "meshfed.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "meshfed.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* POD_IP for the admin listeners, and the cluster identity from the ConfigMap. */}}
{{- define "meshfed.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{- define "meshfed.etcdArgs" -}}
- --prefix=$(MESHFED_PREFIX)
{{- if .Values.etcd.tls.enabled }}
- --etcd-cacert=/etc/meshfed/etcd-tls/ca.crt
- --etcd-cert=/etc/meshfed/etcd-tls/tls.crt
- --etcd-key=/etc/meshfed/etcd-tls/tls.key
{{- end }}
{{- end }}
