# Faultline in a Kubernetes cluster: the namespace with its Pod Security labels, the
# coordinator's certificate and issuing CA as Secrets (generated here with the tls provider,
# supplied, or left to cert-manager), and the chart of this repository as a Helm release.

# ---- Namespace ------------------------------------------------------------------------------

resource "kubernetes_namespace_v1" "faultline" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = var.namespace
    # The agent uses host namespaces and capabilities: Pod Security level privileged.
    labels = {
      "app.kubernetes.io/part-of"          = "faultline"
      "pod-security.kubernetes.io/enforce" = "privileged"
      "pod-security.kubernetes.io/warn"    = "privileged"
      "pod-security.kubernetes.io/audit"   = "privileged"
    }
  }
}

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.faultline[0].metadata[0].name : var.namespace
  chart     = coalesce(var.chart, "${path.module}/../../../daemonset/chart/faultline")
  service   = "faultline-coordinator.${var.namespace}.svc"
}

# ---- Certificates (tls_source generate) -----------------------------------------------------

resource "tls_private_key" "ca" {
  count       = var.tls_source == "generate" ? 1 : 0
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

# The CA: it signs the coordinator's certificate and, as the coordinator's issuer, the agents'.
resource "tls_self_signed_cert" "ca" {
  count                 = var.tls_source == "generate" ? 1 : 0
  private_key_pem       = tls_private_key.ca[0].private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "Faultline CA"
    organization = "Faultline"
  }
}

resource "tls_private_key" "coordinator" {
  count       = var.tls_source == "generate" ? 1 : 0
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "coordinator" {
  count           = var.tls_source == "generate" ? 1 : 0
  private_key_pem = tls_private_key.coordinator[0].private_key_pem
  dns_names       = ["faultline-coordinator", "faultline-coordinator.${var.namespace}", local.service, "${local.service}.cluster.local", "localhost"]
  ip_addresses    = ["127.0.0.1", "::1"]
  uris            = ["spiffe://faultline/coordinator/coordinator"]

  subject {
    common_name         = "coordinator"
    organizational_unit = "coordinator"
  }
}

resource "tls_locally_signed_cert" "coordinator" {
  count                 = var.tls_source == "generate" ? 1 : 0
  cert_request_pem      = tls_cert_request.coordinator[0].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca[0].private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca[0].cert_pem
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["digital_signature", "server_auth", "client_auth"]
}

# An admin client certificate for faultctl (outputs admin_cert_pem and admin_key_pem).
resource "tls_private_key" "admin" {
  count       = var.tls_source == "generate" ? 1 : 0
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "admin" {
  count           = var.tls_source == "generate" ? 1 : 0
  private_key_pem = tls_private_key.admin[0].private_key_pem
  uris            = ["spiffe://faultline/admin/admin"]

  subject {
    common_name         = "admin"
    organizational_unit = "admin"
  }
}

resource "tls_locally_signed_cert" "admin" {
  count                 = var.tls_source == "generate" ? 1 : 0
  cert_request_pem      = tls_cert_request.admin[0].cert_request_pem
  ca_private_key_pem    = tls_private_key.ca[0].private_key_pem
  ca_cert_pem           = tls_self_signed_cert.ca[0].cert_pem
  validity_period_hours = var.ca_validity_hours
  allowed_uses          = ["digital_signature", "client_auth"]
}

locals {
  # The Secrets' contents, as `faultctl certs init --kubernetes` makes them (null: cert-manager).
  tls = var.tls_source == "generate" ? {
    ca_pem          = tls_self_signed_cert.ca[0].cert_pem
    cert_pem        = tls_locally_signed_cert.coordinator[0].cert_pem
    key_pem         = tls_private_key.coordinator[0].private_key_pem_pkcs8
    issuer_cert_pem = tls_self_signed_cert.ca[0].cert_pem
    issuer_key_pem  = tls_private_key.ca[0].private_key_pem_pkcs8
  } : var.supplied_tls
}

# ---- Secrets the chart mounts (tls_source generate or supplied) -----------------------------

resource "kubernetes_secret_v1" "coordinator_tls" {
  count = var.tls_source == "cert_manager" ? 0 : 1

  metadata {
    name      = "faultline-coordinator-tls"
    namespace = local.namespace
    labels    = { "app.kubernetes.io/part-of" = "faultline" }
  }
  data = {
    "ca.pem"              = local.tls.ca_pem
    "coordinator.pem"     = local.tls.cert_pem
    "coordinator-key.pem" = local.tls.key_pem
  }
}

resource "kubernetes_secret_v1" "issuer" {
  count = var.tls_source == "cert_manager" ? 0 : 1

  metadata {
    name      = "faultline-issuer"
    namespace = local.namespace
    labels    = { "app.kubernetes.io/part-of" = "faultline" }
  }
  data = {
    "tls.crt" = local.tls.issuer_cert_pem
    "tls.key" = local.tls.issuer_key_pem
  }
}

# ---- The chart ------------------------------------------------------------------------------

locals {
  # Every key here is a path in daemonset/chart/faultline/values.schema.json (tested).
  chart_values = {
    image = {
      repository = var.image.repository
      tag        = var.image.tag
      digest     = var.image.digest
      pullPolicy = var.image.pull_policy
    }
    imagePullSecrets = [for s in var.image_pull_secrets : { name = s }]
    # The namespace is this module's (with its labels), not the chart's.
    namespace = { create = false }
    tls = {
      source = var.tls_source == "cert_manager" ? "certManager" : "secret"
      certManager = {
        caDuration        = var.cert_manager.ca_duration
        duration          = var.cert_manager.duration
        renewBefore       = var.cert_manager.renew_before
        issuerDuration    = var.cert_manager.issuer_duration
        issuerRenewBefore = var.cert_manager.issuer_renew_before
      }
    }
    coordinator = {
      grpcPort     = var.coordinator_ports.grpc
      metricsPort  = var.coordinator_ports.metrics
      enrollPort   = var.coordinator_ports.enroll
      agentCertTTL = var.agent_cert_ttl
      policy = {
        maxFleetPercentUnderFault = var.policy.max_fleet_percent_under_fault
        maxConcurrentExperiments  = var.policy.max_concurrent_experiments
        maxDuration               = var.policy.max_duration
        protectedAgentLabels      = var.policy.protected_agent_labels
        protectedNamespaces       = var.policy.protected_namespaces
        maxPodPercentPerNamespace = var.policy.max_pod_percent_per_namespace
      }
      persistence = {
        size             = var.coordinator_persistence.size
        storageClassName = var.coordinator_persistence.storage_class
      }
      service = {
        type = var.coordinator_service_type
      }
    }
    agent = {
      metricsPort            = var.agent.metrics_port
      tokenExpirationSeconds = var.agent.token_expiration_seconds
      stateDir               = var.agent.state_dir
      limits = {
        maxConcurrentFaults = var.agent_limits.max_concurrent_faults
        maxDuration         = var.agent_limits.max_duration
        ioPaths             = var.agent_limits.io_paths
      }
      terminationGracePeriodSeconds = var.agent.termination_grace_period_seconds
      priorityClass = {
        value = var.agent.priority
      }
      maxUnavailable = can(regex("%$", var.agent.max_unavailable)) ? var.agent.max_unavailable : tonumber(var.agent.max_unavailable)
    }
    networkPolicy = {
      enabled = var.network_policy_enabled
    }
    # Fault kind pod-kill: the coordinator may delete pods only when this is on.
    podKill = {
      enabled = var.pod_kill_enabled
    }
    monitoring = {
      podMonitor       = { enabled = var.monitoring.pod_monitor }
      serviceMonitor   = { enabled = var.monitoring.service_monitor }
      prometheusRule   = { enabled = var.monitoring.prometheus_rule }
      grafanaDashboard = { enabled = var.monitoring.grafana_dashboard }
      interval         = var.monitoring.interval
    }
  }
}

resource "helm_release" "faultline" {
  name             = var.release_name
  namespace        = local.namespace
  chart            = local.chart
  create_namespace = false
  atomic           = true
  wait             = true
  timeout          = var.helm_timeout_seconds
  # values.schema.json checks every value again on the cluster side.
  values = [yamlencode(local.chart_values)]

  depends_on = [kubernetes_secret_v1.coordinator_tls, kubernetes_secret_v1.issuer]
}

# cert-manager's CA, once the release made it (tls_source cert_manager).
data "kubernetes_secret_v1" "cert_manager_ca" {
  count = var.tls_source == "cert_manager" ? 1 : 0

  metadata {
    name      = "faultline-ca"
    namespace = local.namespace
  }
  depends_on = [helm_release.faultline]
}
