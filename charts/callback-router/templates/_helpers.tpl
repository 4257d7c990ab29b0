{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "callback-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the manager's objects: <release>-<chart>, or the release name if it already contains the chart name. */}}
{{- define "callback-router.fullname" -}}
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

{{/* Name of the manager's objects (Deployment, Roles, bindings). */}}
{{- define "callback-router.managerName" -}}
{{- printf "%s-manager" (include "callback-router.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the manager's ServiceAccount. */}}
{{- define "callback-router.serviceAccountName" -}}
{{- default (include "callback-router.managerName" .) .Values.serviceAccount.name }}
{{- end }}

{{/* Labels of every object the chart creates. */}}
{{- define "callback-router.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: callback-router
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the manager pods. */}}
{{- define "callback-router.managerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "callback-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{/* Labels of the manager's objects. */}}
{{- define "callback-router.managerLabels" -}}
{{ include "callback-router.labels" . }}
app.kubernetes.io/name: {{ include "callback-router.name" . }}
app.kubernetes.io/component: manager
{{- end }}

{{/*
Name of the objects the manager creates for the default CallbackReceiver (its Deployment,
Service, ...): "<receiver.name>-receiver" (controllers.ReceiverObjectName).
*/}}
{{- define "callback-router.receiverObjectName" -}}
{{- printf "%s-receiver" .Values.receiver.name }}
{{- end }}

{{/* Name of the ConfigMap holding the CallbackReceivers the manager installs. */}}
{{- define "callback-router.receiversConfigMap" -}}
{{- printf "%s-receivers" (include "callback-router.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the objects that accompany the default receiver (HPA, PDB, Ingress,
NetworkPolicy, ServiceMonitor). app.kubernetes.io/name is the receiver's object name, as
on the receiver's pods.
*/}}
{{- define "callback-router.receiverLabels" -}}
{{ include "callback-router.labels" . }}
{{ include "callback-router.receiverSelectorLabels" . }}
{{- end }}

{{/* Labels the manager puts on the receiver's pods and Service: the companions select by them. */}}
{{- define "callback-router.receiverSelectorLabels" -}}
app.kubernetes.io/name: {{ include "callback-router.receiverObjectName" . }}
app.kubernetes.io/component: receiver
{{- end }}

{{/*
Labels of the Service that carries the receiver pods' metrics port: the manager's headless
"<receiver.name>-pods" (controllers/dataplane.HeadlessName), never the callback Service,
which may be a LoadBalancer's.
*/}}
{{- define "callback-router.receiverMetricsSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-pods" .Values.receiver.name }}
app.kubernetes.io/component: receiver
{{- end }}

{{/* An image reference from repository, tag (default: appVersion) and digest (wins). */}}
{{- define "callback-router.imageRef" -}}
{{- $repo := index . 0 }}{{- $tag := index . 1 }}{{- $digest := index . 2 }}
{{- if $digest }}
{{- printf "%s@%s" $repo $digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* The manager's image. */}}
{{- define "callback-router.image" -}}
{{- include "callback-router.imageRef" (list .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.digest) }}
{{- end }}

{{/* The receiver's image: the manager's unless receiver.image overrides part of it. */}}
{{- define "callback-router.receiverImage" -}}
{{- $r := .Values.receiver.image }}
{{- if or $r.repository $r.tag $r.digest }}
{{- include "callback-router.imageRef" (list (default .Values.image.repository $r.repository) (default (default .Chart.AppVersion .Values.image.tag) $r.tag) $r.digest) }}
{{- else }}
{{- include "callback-router.image" . }}
{{- end }}
{{- end }}

{{/*
Refuse Kubernetes older than 1.31: the CRD's CEL validation uses the isURL and isCIDR
libraries. Development builds of kube-apiserver (envtest built from source) report
v0.0.0 and are let through.
*/}}
{{- define "callback-router.checkKubeVersion" -}}
{{- $v := .Capabilities.KubeVersion.Version }}
{{- if not (hasPrefix "v0.0.0" $v) }}
{{- if semverCompare "<1.31.0-0" $v }}
{{- fail (printf "callback-router needs Kubernetes 1.31 or newer; this cluster is %s" $v) }}
{{- end }}
{{- end }}
{{- end }}
