{{/* Names and labels shared by every template. */}}

{{- define "i2p-multihome.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "i2p-multihome.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "i2p-multihome.i2pdName" -}}
{{- printf "%s-i2pd" (include "i2p-multihome.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "i2p-multihome.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "i2p-multihome.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "i2p-multihome.operatorSelector" -}}
app.kubernetes.io/name: {{ include "i2p-multihome.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "i2p-multihome.i2pdSelector" -}}
app.kubernetes.io/name: {{ include "i2p-multihome.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: i2pd
{{- end -}}

{{- define "i2p-multihome.serviceAccountName" -}}
{{- default (include "i2p-multihome.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The namespaces served when not cluster-wide: the release namespace unless listed. */}}
{{- define "i2p-multihome.namespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{/*
The operator's rules, and nothing else (each was found necessary by running the operator
without it: e2e/test_chart_install.py). kopf lists and watches MultihomedDestinations and
patches them (finalizer, annotations); the operator patches their status, reads or creates
the keys Secret, reads router credentials Secrets, reads, creates and patches each
destination's peer-profile ConfigMap, and posts Events. Neither ever GETs a
single MultihomedDestination. kopf also tries to watch CustomResourceDefinitions (and, when
not cluster-wide, Namespaces); without rights it logs that and serves what exists at start.
*/}}
{{- define "i2p-multihome.rules" -}}
- apiGroups: ["multihome.i2p"]
  resources: ["multihomeddestinations"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["multihome.i2p"]
  resources: ["multihomeddestinations/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* An image reference: repository:tag, or repository:tag@digest when a digest is given
(the tag then only labels it). Call with (list repository tag digest). */}}
{{- define "i2p-multihome.image" -}}
{{- $repository := index . 0 -}}
{{- $tag := index . 1 -}}
{{- $digest := index . 2 -}}
{{- if $digest -}}
{{- printf "%s:%s@%s" $repository $tag $digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Deployment safety checks that a JSON schema cannot express. */}}
{{- define "i2p-multihome.validate" -}}
{{- if and .Values.watch.allNamespaces .Values.watch.namespaces -}}
{{- fail "watch.namespaces is only used with watch.allNamespaces=false; set one or the other" -}}
{{- end -}}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.livenessProbe.port)) -}}
{{- fail "metrics.port and livenessProbe.port must differ" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- end -}}
