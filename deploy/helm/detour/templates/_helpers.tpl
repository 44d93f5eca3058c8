{{/*
Object names. detour-webhook unless fullnameOverride says otherwise; the
detour CLI looks for detour-webhook in detour-system.
*/}}
{{- define "detour.fullname" -}}
{{- default "detour-webhook" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "detour.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{- define "detour.secretName" -}}
{{- printf "%s-tls" (include "detour.fullname" .) -}}
{{- end -}}

{{/* The labels of every object, as in deploy/base. */}}
{{- define "detour.labels" -}}
app.kubernetes.io/name: detour-webhook
app.kubernetes.io/part-of: detour
{{- end -}}

{{- define "detour.selectorLabels" -}}
app.kubernetes.io/name: detour-webhook
{{- end -}}

{{- define "detour.image" -}}
{{- if not .Values.image.repository -}}
{{- fail "image.repository is empty" -}}
{{- end -}}
{{- if .Values.image.tag -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- else -}}
{{- .Values.image.repository -}}
{{- end -}}
{{- end -}}
