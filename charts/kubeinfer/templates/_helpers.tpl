{{- define "kubeinfer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubeinfer.labels" -}}
app.kubernetes.io/name: kubeinfer-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubeinfer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubeinfer.selectorLabels" -}}
app.kubernetes.io/name: kubeinfer-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubeinfer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeinfer.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs: only what it reads, applies, deletes or reports.
e2e/test_pod_security.py derives from the API server's audit log what the operator uses
and fails for a rule granted and never used, or a request refused. Deployments, Services
and PodDisruptionBudgets are always rendered: applied (patch; create when new), never read
or deleted; ConfigMaps and HPAs come and go, so they are also read and deleted. */}}
{{- define "kubeinfer.rules" -}}
- apiGroups: ["kubeinfer.dev"]
  resources: ["inferencemodels", "inferenceensembles"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kubeinfer.dev"]
  resources: ["inferencemodels/status", "inferenceensembles/status"]
  verbs: ["patch"]
# checked at admission (OwnerReferencesPermissionEnforcement) when an owned object names
# its owner with blockOwnerDeletion
- apiGroups: ["kubeinfer.dev"]
  resources: ["inferencemodels/finalizers", "inferenceensembles/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.autoscaling.keda }}
# spec.autoscaling.autoscaler: keda (the default); status reads the ScaledObject
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.monitoring.perModelServiceMonitors }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- end -}}
