# Every variable that becomes a chart value is checked here against the range the chart's
# values.schema.json allows (tests/tests/terraform/kubernetes.rs compares the two), so a value
# the chart would refuse is refused at plan time, with the allowed range in the message.

# ---- Release --------------------------------------------------------------------------------

variable "namespace" {
  description = "Namespace Faultline is installed in; created with the Pod Security labels the agent needs (level privileged). A DNS-1123 label: 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit."
  type        = string
  default     = "faultline"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace: a DNS-1123 label, 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit."
  }
}

variable "create_namespace" {
  description = "Create the namespace (with its Pod Security labels). false: it exists already, labelled pod-security.kubernetes.io/enforce=privileged (docs/kubernetes.md)."
  type        = bool
  default     = true
}

variable "release_name" {
  description = "Helm release name: 1..=53 of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit. One release per cluster (the chart's cluster-scoped objects have fixed names)."
  type        = string
  default     = "faultline"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$", var.release_name))
    error_message = "release_name: 1..=53 of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit."
  }
}

variable "chart" {
  description = "The chart: a path (null: daemonset/chart/faultline of this repository, the one this module is tested against) or an OCI/repository reference your pipeline publishes."
  type        = string
  default     = null

  validation {
    condition     = var.chart == null || try(length(var.chart) >= 1, false)
    error_message = "chart: a chart path or reference of 1 or more characters, or null for this repository's chart."
  }
}

variable "helm_timeout_seconds" {
  description = "Seconds (60..=3600) Helm waits for the release's workloads to become ready."
  type        = number
  default     = 600

  validation {
    condition     = var.helm_timeout_seconds >= 60 && var.helm_timeout_seconds <= 3600 && floor(var.helm_timeout_seconds) == var.helm_timeout_seconds
    error_message = "helm_timeout_seconds: an integer in 60..=3600."
  }
}

# ---- Image ----------------------------------------------------------------------------------

variable "image" {
  description = "The image with faultline-agent, faultline-coordinator and faultctl (the repository's Dockerfile): repository (1 or more characters, without tag), tag (empty: the chart's appVersion; 1..=128 of letters, digits, '_', '.', '-', not starting with '.' or '-'), digest (sha256:<64 hex>, used instead of the tag; pin it in production), pull_policy (Always, IfNotPresent or Never)."
  type = object({
    repository  = string
    tag         = optional(string, "")
    digest      = optional(string, "")
    pull_policy = optional(string, "Always")
  })

  validation {
    condition     = length(var.image.repository) >= 1
    error_message = "image.repository: 1 or more characters (the repository, without tag)."
  }
  validation {
    condition     = can(regex("^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image.tag))
    error_message = "image.tag: empty, or 1..=128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'."
  }
  validation {
    condition     = can(regex("^$|^sha256:[a-f0-9]{64}$", var.image.digest))
    error_message = "image.digest: empty, or sha256: and 64 lowercase hex digits."
  }
  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image.pull_policy)
    error_message = "image.pull_policy: one of Always, IfNotPresent, Never."
  }
}

variable "image_pull_secrets" {
  description = "Names of Secrets (in the namespace) to pull the image with; each 1 or more characters."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.image_pull_secrets : length(s) >= 1])
    error_message = "image_pull_secrets: each name is 1 or more characters."
  }
}

# ---- Certificates ---------------------------------------------------------------------------

variable "tls_source" {
  description = "Where the coordinator's certificate and its issuing CA come from: generate (this module, with the tls provider: a CA, the coordinator's certificate and an admin client certificate; the keys are in the Terraform state), supplied (var.supplied_tls, e.g. from your PKI or `faultctl certs init`) or cert_manager (the chart's cert-manager Certificates; cert-manager must be installed)."
  type        = string
  default     = "generate"

  validation {
    condition     = contains(["generate", "supplied", "cert_manager"], var.tls_source)
    error_message = "tls_source: one of generate, supplied, cert_manager."
  }
}

variable "supplied_tls" {
  description = "tls_source supplied: ca_pem (the CA clients and agents trust), cert_pem and key_pem (the coordinator's: URI SAN spiffe://faultline/coordinator/coordinator and the Service's DNS names), issuer_cert_pem and issuer_key_pem (the CA that signs agent certificates, PKCS#8 key; may be the same CA)."
  type = object({
    ca_pem          = string
    cert_pem        = string
    key_pem         = string
    issuer_cert_pem = string
    issuer_key_pem  = string
  })
  default   = null
  sensitive = true

  validation {
    condition     = var.supplied_tls == null || try(strcontains(var.supplied_tls.ca_pem, "BEGIN CERTIFICATE") && strcontains(var.supplied_tls.cert_pem, "BEGIN CERTIFICATE") && strcontains(var.supplied_tls.issuer_cert_pem, "BEGIN CERTIFICATE") && strcontains(var.supplied_tls.key_pem, "PRIVATE KEY") && strcontains(var.supplied_tls.issuer_key_pem, "BEGIN PRIVATE KEY"), false)
    error_message = "supplied_tls: ca_pem, cert_pem and issuer_cert_pem are PEM certificates (BEGIN CERTIFICATE), key_pem a PEM key, issuer_key_pem a PKCS#8 PEM key (BEGIN PRIVATE KEY)."
  }
  validation {
    condition     = var.tls_source != "supplied" || var.supplied_tls != null
    error_message = "supplied_tls: required when tls_source is supplied."
  }
}

variable "ca_validity_hours" {
  description = "tls_source generate: validity of the generated CA and certificates in hours, 24..=87600 (10 years). Rotate before it ends (docs/kubernetes.md)."
  type        = number
  default     = 8760

  validation {
    condition     = var.ca_validity_hours >= 24 && var.ca_validity_hours <= 87600 && floor(var.ca_validity_hours) == var.ca_validity_hours
    error_message = "ca_validity_hours: an integer in 24..=87600."
  }
}

variable "cert_manager" {
  description = "tls_source cert_manager: Go durations as cert-manager takes them (a number and ns, us, ms, s, m or h, repeated, such as 2160h): ca_duration, duration, renew_before, issuer_duration, issuer_renew_before."
  type = object({
    ca_duration         = optional(string, "87600h")
    duration            = optional(string, "2160h")
    renew_before        = optional(string, "360h")
    issuer_duration     = optional(string, "8760h")
    issuer_renew_before = optional(string, "720h")
  })
  default = {}

  validation {
    condition     = alltrue([for d in values(var.cert_manager) : can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$", d))])
    error_message = "cert_manager: each duration is a Go duration, numbers with ns, us, ms, s, m or h (such as 2160h or 1h30m)."
  }
}

# ---- Coordinator ----------------------------------------------------------------------------

variable "coordinator_ports" {
  description = "The coordinator's ports, each 1..=65535: grpc (mutual TLS; 7443), metrics (plain-HTTP /metrics, /healthz, /readyz; 9466), enroll (agents' enrollment; 7444)."
  type = object({
    grpc    = optional(number, 7443)
    metrics = optional(number, 9466)
    enroll  = optional(number, 7444)
  })
  default = {}

  validation {
    condition     = alltrue([for p in values(var.coordinator_ports) : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "coordinator_ports: grpc, metrics and enroll are integers in 1..=65535."
  }
}

variable "agent_cert_ttl" {
  description = "Lifetime of the agent certificates the coordinator issues, 1m..=30d: numbers with s, m, h or d (such as 24h); agents renew at two thirds of it."
  type        = string
  default     = "24h"

  validation {
    condition     = can(regex("^([0-9]+(s|m|h|d))+$", var.agent_cert_ttl))
    error_message = "agent_cert_ttl: 1m..=30d, numbers with s, m, h or d (such as 24h)."
  }
}

variable "policy" {
  description = "The blast-radius policy (docs/experiments.md): max_fleet_percent_under_fault 1..=100 (50), max_concurrent_experiments 1..=1000 (5), max_duration (1s..=7d, numbers with ms, s, m, h or d; 1h), protected_agent_labels, protected_namespaces (DNS-1123 labels; kube-system), max_pod_percent_per_namespace 1..=100 (50)."
  type = object({
    max_fleet_percent_under_fault = optional(number, 50)
    max_concurrent_experiments    = optional(number, 5)
    max_duration                  = optional(string, "1h")
    protected_agent_labels        = optional(map(string), { "faultline.dev/protected" = "true" })
    protected_namespaces          = optional(list(string), ["kube-system"])
    max_pod_percent_per_namespace = optional(number, 50)
  })
  default = {}

  validation {
    condition     = var.policy.max_fleet_percent_under_fault >= 1 && var.policy.max_fleet_percent_under_fault <= 100
    error_message = "policy.max_fleet_percent_under_fault: a number in 1..=100."
  }
  validation {
    condition     = var.policy.max_concurrent_experiments >= 1 && var.policy.max_concurrent_experiments <= 1000 && floor(var.policy.max_concurrent_experiments) == var.policy.max_concurrent_experiments
    error_message = "policy.max_concurrent_experiments: an integer in 1..=1000."
  }
  validation {
    condition     = can(regex("^([0-9]+(ms|s|m|h|d))+$", var.policy.max_duration))
    error_message = "policy.max_duration: 1s..=7d, numbers with ms, s, m, h or d (such as 1h)."
  }
  validation {
    condition     = alltrue([for n in var.policy.protected_namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", n))]) && length(distinct(var.policy.protected_namespaces)) == length(var.policy.protected_namespaces)
    error_message = "policy.protected_namespaces: distinct DNS-1123 labels, 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit."
  }
  validation {
    condition     = var.policy.max_pod_percent_per_namespace >= 1 && var.policy.max_pod_percent_per_namespace <= 100
    error_message = "policy.max_pod_percent_per_namespace: a number in 1..=100."
  }
}

variable "coordinator_persistence" {
  description = "The coordinator's store: size (a Kubernetes quantity such as 1Gi) and storage_class (empty: the cluster's default)."
  type = object({
    size          = optional(string, "1Gi")
    storage_class = optional(string, "")
  })
  default = {}

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$", var.coordinator_persistence.size))
    error_message = "coordinator_persistence.size: a Kubernetes quantity, a number with an optional suffix m, k, Ki, Mi, Gi, Ti, M, G or T (such as 1Gi)."
  }
}

variable "coordinator_service_type" {
  description = "Type of the coordinator's Service: ClusterIP, NodePort or LoadBalancer."
  type        = string
  default     = "ClusterIP"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.coordinator_service_type)
    error_message = "coordinator_service_type: one of ClusterIP, NodePort, LoadBalancer."
  }
}

# ---- Agent ----------------------------------------------------------------------------------

variable "agent" {
  description = "The agent DaemonSet: metrics_port 1..=65535 (9465), token_expiration_seconds 600..=86400 (600), state_dir (absolute host path; /var/lib/faultline), termination_grace_period_seconds 15..=3600 (60), priority 0..=1000000000 (1000000000), max_unavailable (a count >= 1 or a percentage such as 10%)."
  type = object({
    metrics_port                     = optional(number, 9465)
    token_expiration_seconds         = optional(number, 600)
    state_dir                        = optional(string, "/var/lib/faultline")
    termination_grace_period_seconds = optional(number, 60)
    priority                         = optional(number, 1000000000)
    max_unavailable                  = optional(string, "1")
  })
  default = {}

  validation {
    condition     = var.agent.metrics_port >= 1 && var.agent.metrics_port <= 65535 && floor(var.agent.metrics_port) == var.agent.metrics_port
    error_message = "agent.metrics_port: an integer in 1..=65535."
  }
  validation {
    condition     = var.agent.token_expiration_seconds >= 600 && var.agent.token_expiration_seconds <= 86400 && floor(var.agent.token_expiration_seconds) == var.agent.token_expiration_seconds
    error_message = "agent.token_expiration_seconds: an integer in 600..=86400."
  }
  validation {
    condition     = can(regex("^/.+", var.agent.state_dir))
    error_message = "agent.state_dir: an absolute host path (starting with / and longer than /)."
  }
  validation {
    condition     = var.agent.termination_grace_period_seconds >= 15 && var.agent.termination_grace_period_seconds <= 3600 && floor(var.agent.termination_grace_period_seconds) == var.agent.termination_grace_period_seconds
    error_message = "agent.termination_grace_period_seconds: an integer in 15..=3600."
  }
  validation {
    condition     = var.agent.priority >= 0 && var.agent.priority <= 1000000000 && floor(var.agent.priority) == var.agent.priority
    error_message = "agent.priority: an integer in 0..=1000000000."
  }
  validation {
    condition     = can(regex("^[0-9]{1,3}%$", var.agent.max_unavailable)) || try(tonumber(var.agent.max_unavailable) >= 1 && floor(tonumber(var.agent.max_unavailable)) == tonumber(var.agent.max_unavailable), false)
    error_message = "agent.max_unavailable: an integer >= 1 or a percentage of 1..=3 digits and % (such as 10%)."
  }
}

variable "agent_limits" {
  description = "The agent's own limits, enforced even when the coordinator asks for more: max_concurrent_faults 1..=1000 (16), max_duration 1s..=7d (numbers with ms, s, m, h or d; 1h), io_paths (absolute directories io faults may write in, in the target's filesystem)."
  type = object({
    max_concurrent_faults = optional(number, 16)
    max_duration          = optional(string, "1h")
    io_paths              = optional(list(string), ["/var/tmp", "/tmp"])
  })
  default = {}

  validation {
    condition     = var.agent_limits.max_concurrent_faults >= 1 && var.agent_limits.max_concurrent_faults <= 1000 && floor(var.agent_limits.max_concurrent_faults) == var.agent_limits.max_concurrent_faults
    error_message = "agent_limits.max_concurrent_faults: an integer in 1..=1000."
  }
  validation {
    condition     = can(regex("^([0-9]+(ms|s|m|h|d))+$", var.agent_limits.max_duration))
    error_message = "agent_limits.max_duration: 1s..=7d, numbers with ms, s, m, h or d (such as 1h)."
  }
  validation {
    condition     = alltrue([for p in var.agent_limits.io_paths : can(regex("^/", p)) && !strcontains(p, "..")])
    error_message = "agent_limits.io_paths: absolute paths (starting with /) without '..'."
  }
}

# ---- Network policy and monitoring ----------------------------------------------------------

variable "network_policy_enabled" {
  description = "Render the NetworkPolicies that admit traffic only to the ports Faultline serves."
  type        = bool
  default     = true
}

variable "pod_kill_enabled" {
  description = "Grant the coordinator delete on pods, for experiments with fault kind pod-kill (the chart's podKill.enabled)."
  type        = bool
  default     = false
}

variable "monitoring" {
  description = "Prometheus Operator and Grafana objects (they need the Operator's CRDs and Grafana's dashboard sidecar): pod_monitor, service_monitor, prometheus_rule, grafana_dashboard (all false), interval (the scrape interval: numbers with ms, s, m or h; 15s)."
  type = object({
    pod_monitor       = optional(bool, false)
    service_monitor   = optional(bool, false)
    prometheus_rule   = optional(bool, false)
    grafana_dashboard = optional(bool, false)
    interval          = optional(string, "15s")
  })
  default = {}

  validation {
    condition     = can(regex("^([0-9]+(ms|s|m|h))+$", var.monitoring.interval))
    error_message = "monitoring.interval: a scrape interval, numbers with ms, s, m or h (such as 15s)."
  }
}
