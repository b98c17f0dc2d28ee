{{/* Labels shared by every object of the release. */}}
{{- define "chs.labels" -}}
app.kubernetes.io/part-of: csi-hostpath-selinux
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of the node DaemonSet (immutable once installed). */}}
{{- define "chs.selectorLabels" -}}
app.kubernetes.io/name: csi-hostpath-selinux
app.kubernetes.io/component: node
{{- end -}}

{{/* Name prefix for cluster-scoped and namespaced objects. */}}
{{- define "chs.name" -}}
csi-hostpath-selinux
{{- end -}}

{{/* The socket directory of the driver under the kubelet directory. */}}
{{- define "chs.socketDir" -}}
{{ .Values.kubeletDir }}/plugins/{{ .Values.driverName }}
{{- end -}}
