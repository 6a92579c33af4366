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
{{- include "faultline.checkDuration" (list "coordinator.policy.maxDuration" $p.maxDuration) -}}
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
{{- include "faultline.checkDuration" (list "agent.limits.maxDuration" .Values.agent.limits.maxDuration) -}}
{{- range $i, $p := .Values.agent.limits.ioPaths -}}
{{- if or (not (hasPrefix "/" $p)) (regexMatch "(^|/)[.][.](/|$)" $p) -}}
{{- fail (printf "agent.limits.ioPaths[%d]: %q must be an absolute path without '..'" $i $p) -}}
{{- end -}}
{{- end -}}
# The agent's own limits, enforced even if the coordinator asks for more.
[limits]
max_concurrent_faults = {{ .Values.agent.limits.maxConcurrentFaults }}
max_duration = {{ .Values.agent.limits.maxDuration | quote }}
# Pods here are never targets, by any target form, whatever the coordinator sends: the
# coordinator's protected namespaces (the release namespace included), enforced again here.
protected_namespaces = [{{ range $i, $n := append .Values.coordinator.policy.protectedNamespaces .Release.Namespace | uniq }}{{ if $i }}, {{ end }}{{ $n | quote }}{{ end }}]
# The kubelet's pod log directories (mounted read-only): where the agent reads pods' namespaces.
pod_logs_dir = "/var/log/pods"
# The kubelet's container log links (mounted read-only, names only): where container-kill
# reads which container IDs a pod's container names have.
container_logs_dir = "/var/log/containers"
# Directories io faults may write in, in the target's filesystem (a container's through
# /proc/<pid>/root, the node's for the host target).
io_paths = [{{ range $i, $p := .Values.agent.limits.ioPaths }}{{ if $i }}, {{ end }}{{ $p | quote }}{{ end }}]
{{- end }}

{{/* Fails unless duration (list field value) is within 1s..=7d, as the binaries require:
     a sum of <n>ms, <n>s, <n>m, <n>h and <n>d parts (values.schema.json checks the form). */}}
{{- define "faultline.checkDuration" -}}
{{- include "faultline.checkDurationIn" (list (index . 0) (index . 1) 1000 604800000 "1s..=7d") -}}
{{- end }}

{{/* Fails unless duration (list field value min_ms max_ms range_text) is within the range. */}}
{{- define "faultline.checkDurationIn" -}}
{{- $field := index . 0 -}}
{{- $value := index . 1 | toString -}}
{{- $min := index . 2 -}}
{{- $max := index . 3 -}}
{{- $ms := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d)" $value -1 -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $unit := trimPrefix $n . -}}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit -}}
{{- $ms = add $ms (mul (atoi $n) $scale) -}}
{{- end -}}
{{- if or (lt (int64 $ms) (int64 $min)) (gt (int64 $ms) (int64 $max)) -}}
{{- fail (printf "%s: %s is outside %s" $field $value (index . 4)) -}}
{{- end -}}
{{- end }}

{{/* The agents' ServiceAccount as the coordinator's --agent-service-account names it. */}}
{{- define "faultline.agentServiceAccount" -}}
{{ .Release.Namespace }}/faultline-agent
{{- end }}

{{/* The ConfigMap with the CA bundle agents trust (published by the coordinator). */}}
{{- define "faultline.caBundle" -}}
faultline-ca
{{- end }}
