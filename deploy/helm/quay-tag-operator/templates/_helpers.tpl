{{/*
Name of the release's objects: the release name, with the chart name appended unless the
release name already contains it. Kubernetes names stop at 63 characters.
*/}}
{{- define "quay-tag-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Labels that select the operator's pods. They never change after the first install, because a
Deployment's selector is immutable.
*/}}
{{- define "quay-tag-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object of the release.
*/}}
{{- define "quay-tag-operator.labels" -}}
{{ include "quay-tag-operator.selectorLabels" . }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "quay-tag-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
RBAC rules on RepositoryTags, Events, Secrets and ConfigMaps: in a ClusterRole when the
operator watches every namespace, in a Role of the release namespace otherwise.
*/}}
{{- define "quay-tag-operator.namespacedRules" -}}
# kopf lists and watches the resources; the operator patches kopf's annotations and,
# for deletionPolicy Delete, the finalizer.
- apiGroups: [quaytag.dev]
  resources: [repositorytags]
  verbs: [list, watch, patch]
# The status writer merge-patches the status subresource.
- apiGroups: [quaytag.dev]
  resources: [repositorytags/status]
  verbs: [patch]
# kopf 1.45 posts Events through the core API (v1), not events.k8s.io.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Token Secrets named by spec.connection.tokenSecretRef and CA bundle ConfigMaps named by
# spec.connection.caBundleConfigMapRef, read by name. There is no list or watch, and the
# operator sends only Secrets labeled quaytag.dev/token=true to Quay.
- apiGroups: [""]
  resources: [secrets, configmaps]
  verbs: [get]
{{- end -}}
