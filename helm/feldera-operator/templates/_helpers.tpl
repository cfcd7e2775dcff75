{{/* Chart name, overridable. */}}
{{- define "feldera-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless the release name holds it. */}}
{{- define "feldera-operator.fullname" -}}
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

{{- define "feldera-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "feldera-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "feldera-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "feldera-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: feldera
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's image: a digest, when given, pins it and wins over the tag. */}}
{{- define "feldera-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "feldera-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "feldera-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when replicas compete for a Lease. */}}
{{- define "feldera-operator.leaderElection" -}}
{{- if or (gt (int .Values.replicas) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/* The Lease replicas compete for: named after the release, in the release namespace. */}}
{{- define "feldera-operator.leaseName" -}}
{{- include "feldera-operator.fullname" . }}
{{- end }}

{{/* Rules a served namespace needs (a ClusterRole's when all namespaces are served). */}}
{{- define "feldera-operator.servedRules" -}}
# kopf's watches (list, then watch) of both kinds; deletion.py adds and removes the finalizer of
# FelderaPipelines with deletionPolicy Stop or Delete (kube.py patch_object); before correcting
# drift, pipeline_reconcile.py gets the resource to confirm it still exists (kube.py get_object).
# The operator never creates or deletes them.
- apiGroups: [feldera.dev]
  resources: [felderapipelines]
  verbs: [get, list, watch, patch]
- apiGroups: [feldera.dev]
  resources: [felderainstances]
  verbs: [list, watch]
# reconciler.py writes what it observed (kube.py patch_status, a merge patch).
- apiGroups: [feldera.dev]
  resources: [felderapipelines/status, felderainstances/status]
  verbs: [patch]
# FelderaInstance spec.apiKeySecretRef and spec.caSecretRef, read by name at every observation
# (kube.py read_secret_key). Never listed or watched: the operator holds no Secret cache.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on the resources (kube.py post_event), and kopf's own warning Events (kopf posts core v1
# Events with POST only; neither it nor the operator patches or reads them).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# The SQL of spec.program.sqlFrom: kopf watches (list, then watch) only the ConfigMaps labelled
# feldera.dev/program=true, the API server filtering them (a label selector); one the watch does
# not hold is read by name, to tell a missing ConfigMap from an unlabelled one (kube.py
# get_configmap).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
{{- end }}

{{- define "feldera-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "feldera-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The `job` label of the operator's series, whichever monitor scrapes it: the alerts and the
dashboard select on it. Namespaced, so two releases never share one. */}}
{{- define "feldera-operator.job" -}}
{{- printf "%s/%s" .Release.Namespace (include "feldera-operator.fullname" .) }}
{{- end }}

{{/* Scrape settings shared by the ServiceMonitor and the PodMonitor. */}}
{{- define "feldera-operator.scrapeLabels" -}}
# The operator's own `instance` and `namespace` labels name the Feldera instance and the
# resource's namespace; honoured, they keep those names instead of becoming exported_instance
# and exported_namespace (the target's own labels stay on every series that lacks them).
honorLabels: true
relabelings:
  - targetLabel: job
    replacement: {{ include "feldera-operator.job" . }}
{{- end }}
