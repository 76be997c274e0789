{{/*
Names and labels shared by every template.
*/}}

{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name; object names are DNS labels, hence 63 characters.
*/}}
{{- define "kubetune.fullname" -}}
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

{{/*
Name of RBAC objects that live outside the release's namespace (cluster-scoped ones, and Roles in
watched namespaces). The release namespace is part of it, so two releases of the same name in
different namespaces never claim the same object.
*/}}
{{- define "kubetune.rbacName" -}}
{{- printf "%s-%s" (include "kubetune.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "kubetune.subjects" -}}
- kind: ServiceAccount
  name: {{ include "kubetune.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Standard labels. managed-by stays "Helm": the operator labels its own children
"app.kubernetes.io/managed-by: kubetune-operator" and selects them by it, so the two never mix.
*/}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator's image (the Dockerfile's `operator` target).
*/}}
{{- define "kubetune.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The trainer and export Jobs' image (the Dockerfile's `trainer` target). Its tag follows the
operator's unless set: the operator writes the config the trainer reads, so both are one release.
*/}}
{{- define "kubetune.trainerImage" -}}
{{- $tag := .Values.trainerImage.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" .Values.trainerImage.repository $tag }}
{{- end }}

{{/*
The operator's rules in each namespace it serves (or cluster-wide). Every rule maps to a call in
operator/kubetune_operator (Kopf's watches, services/children.py, services/reconcile.py).
Secrets are deliberately absent: trainer pods read S3 credentials through secretKeyRef.
*/}}
{{- define "kubetune.rules" -}}
# Kopf lists and watches FineTuneJobs and patches its finalizer and annotations onto them; the
# operator deletes a FineTuneJob once its ttlSecondsAfterFinished has passed. A FineTuneSweep's
# trials are FineTuneJobs: created, and suspended by patch when they stop early.
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Status is written once per pass. Holding get/patch here is also what lets the operator grant
# each trainer a Role on its own FineTuneJob's status (RBAC forbids granting what one lacks).
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs/status"]
  verbs: ["get", "patch", "update"]
# Children carry blockOwnerDeletion owner references to their FineTuneJob; clusters running the
# OwnerReferencesPermissionEnforcement admission plugin require update on finalizers for that.
- apiGroups: ["kubetune.dev"]
  resources: ["finetunejobs/finalizers"]
  verbs: ["update"]
# FineTuneSweeps: watched and read by Kopf (which patches its finalizer and annotations onto them),
# their status written once per pass; trials carry a blockOwnerDeletion owner reference to their sweep.
- apiGroups: ["kubetune.dev"]
  resources: ["finetunesweeps"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kubetune.dev"]
  resources: ["finetunesweeps/status"]
  verbs: ["get", "patch"]
- apiGroups: ["kubetune.dev"]
  resources: ["finetunesweeps/finalizers"]
  verbs: ["update"]
# Trainer and export Jobs: indexed by watch, created, suspended/resumed by patch, deleted when the
# spec changes.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Multi-node trainers: a JobSet (created, suspended/resumed by patch, deleted like the Jobs).
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Kueue's Workloads of queued trainers and exports: read for Kueue's verdict, and patched
# (spec.active) to carry the user's spec.suspend.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "patch"]
# The Jobs' pods are only observed (progress, exit codes, termination messages).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Each run's trainer config.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "delete"]
# Each FineTuneJob's trainer identity: a ServiceAccount, and a Role + RoleBinding that allow it
# get/patch on that one FineTuneJob's status.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
# Events on FineTuneJobs (Kopf posts through the core API; newer clients use events.k8s.io). The
# Job controller's FailedCreate Events are watched: they say why a quota refused the pods.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
What Kopf itself reads cluster-wide: CRDs, to notice FineTuneJob's CRD being changed. With
watchNamespaces set it also lists namespaces, to start serving a watched namespace created later.
*/}}
{{- define "kubetune.discoveryRules" -}}
# Kopf watches CRDs, to pick up a changed FineTuneJob CRD without a restart.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not .Values.clusterWide }}
# Serving some namespaces only, Kopf lists namespaces to start on a watched one created later.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
