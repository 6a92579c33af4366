output "url" {
  description = "The coordinator's gRPC address for agents (the host module's coordinator_url) and faultctl --coordinator."
  value       = "https://${local.address}:${var.ports.grpc}"
}

output "enroll_url" {
  description = "The enrollment listener agents enroll at (the host module's enroll_url); null without an issuer."
  value       = var.issuer == null ? null : "https://${local.address}:${var.ports.enroll}"
}

output "metrics_url" {
  description = "Plain-HTTP /metrics, /healthz and /readyz."
  value       = "http://${local.address}:${var.ports.metrics}"
}

output "ca_pem" {
  description = "The CA agents check the coordinator against (the host module's ca_pem)."
  value       = var.tls.ca_pem
  sensitive   = true
}

output "cloud_init" {
  description = "cloud-config user-data that installs the coordinator at a new VM's first boot. Needs coordinator_binary_url and coordinator_binary_sha256; null without them. Holds the coordinator's and the issuer's private keys: treat it as a secret."
  value       = local.cloud_init
  sensitive   = true
}
