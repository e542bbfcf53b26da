{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Seconds in a duration value such as 30s, 1m or 1m30s (whole seconds). */}}
{{- define "weir.seconds" -}}
{{- $d := . | toString }}
{{- $total := 0 }}
{{- range $m := regexFindAll "[0-9]+(ms|h|m|s)" $d -1 }}
{{- $n := regexFind "[0-9]+" $m | int }}
{{- if hasSuffix "ms" $m }}{{ $total = add $total (div $n 1000) }}
{{- else if hasSuffix "h" $m }}{{ $total = add $total (mul $n 3600) }}
{{- else if hasSuffix "m" $m }}{{ $total = add $total (mul $n 60) }}
{{- else }}{{ $total = add $total $n }}{{ end }}
{{- end }}
{{- $total }}
{{- end }}

{{/* The rules weir needs on namespaced objects it watches (ClusterRole or
     per-namespace Role). Reviewed by tests/tests/chart.rs. */}}
{{- define "weir.namespacedRules" -}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["list", "watch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["weir.dev"]
  resources: ["gatewaypolicies"]
  verbs: ["list", "watch"]
- apiGroups: ["weir.dev"]
  resources: ["gatewaypolicies/status"]
  verbs: ["patch"]
# Secrets that GatewayPolicies name (JWT keys, API-key consumers); weir
# watches only those, by name or label selector, in the policy's namespace.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
