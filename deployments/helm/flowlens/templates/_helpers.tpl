{{/* Image reference for a binary: flowlens.image (list $ "flow-collector"). */}}
{{- define "flowlens.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" $root.Values.image.registry (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) -}}
{{- end -}}

{{/* Common labels: flowlens.labels (list $ "flow-collector"). */}}
{{- define "flowlens.labels" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/part-of: flowlens
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version }}
{{- end -}}

{{- define "flowlens.selector" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end -}}

{{/*
flowlens.env turns a config map into FLOWLENS_ variables the way internal/settings reads them:
nested keys joined with underscores, upper-cased. Call with (list "FLOWLENS" .Values.x.config).
*/}}
{{- define "flowlens.env" -}}
{{- $prefix := index . 0 -}}
{{- range $k, $v := index . 1 }}
{{- $name := printf "%s_%s" $prefix (upper (replace "." "_" $k)) }}
{{- if kindIs "map" $v }}
{{- include "flowlens.env" (list $name $v) }}
{{- else }}
- name: {{ $name }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "flowlens.collectorHost" -}}
{{- printf "flow-collector.%s.svc" .Release.Namespace -}}
{{- end -}}

{{- define "flowlens.natsURL" -}}
{{- printf "nats://flowlens-nats.%s.svc:4222" .Release.Namespace -}}
{{- end -}}

{{/* Pod security context shared by the unprivileged components. */}}
{{- define "flowlens.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "flowlens.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* "true" when exporters must trust the CA in the collector's Secret (ca.crt): TLS on, and a private CA. */}}
{{- define "flowlens.collectorCA" -}}
{{- if and (not .Values.collector.insecure) .Values.collector.tls.privateCA -}}true{{- end -}}
{{- end }}
