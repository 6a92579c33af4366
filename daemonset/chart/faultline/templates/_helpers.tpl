{{/* Labels every object carries; "component" is the agent's or the coordinator's name. */}}
{{- define "faultline.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: faultline
{{- end }}

{{/* The image reference: by digest when one is given, else by tag (default: appVersion). */}}
{{- define "faultline.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The coordinator's in-cluster address, which its certificate must name. */}}
{{- define "faultline.coordinatorHost" -}}
faultline-coordinator.{{ .Release.Namespace }}.svc
{{- end }}

{{/* Whether certificates come from cert-manager. */}}
{{- define "faultline.certManager" -}}
{{- if eq .Values.tls.source "certManager" }}true{{ end -}}
{{- end }}

{{/* coordinator.toml; its checksum rolls the coordinator when it changes. */}}
{{- define "faultline.coordinatorConfig" -}}
{{- $p := .Values.coordinator.policy -}}
# Blast-radius policy; every field is optional (docs/experiments.md, docs/kubernetes.md).
[policy]
max_fleet_percent_under_fault = {{ $p.maxFleetPercentUnderFault }}
max_concurrent_experiments = {{ $p.maxConcurrentExperiments }}
max_duration = {{ $p.maxDuration | quote }}
protected_agent_labels = { {{- range $i, $k := keys $p.protectedAgentLabels | sortAlpha }}{{ if $i }},{{ end }} {{ $k | quote }} = {{ get $p.protectedAgentLabels $k | quote }}{{ end }} }
# Pods here are never targeted: the cluster's own and Faultline's.
protected_namespaces = [{{ range $i, $n := append $p.protectedNamespaces .Release.Namespace | uniq }}{{ if $i }}, {{ end }}{{ $n | quote }}{{ end }}]
# At most this share of a namespace's matching Running pods is under fault at once.
max_pod_percent_per_namespace = {{ $p.maxPodPercentPerNamespace }}
{{- end }}

{{/* agent.toml; its checksum rolls the agents when it changes. */}}
{{- define "faultline.agentConfig" -}}
# The agent's own limits, enforced even if the coordinator asks for more.
[limits]
max_concurrent_faults = {{ .Values.agent.limits.maxConcurrentFaults }}
max_duration = {{ .Values.agent.limits.maxDuration | quote }}
{{- end }}
