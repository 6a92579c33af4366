output "namespace" {
  description = "The namespace Faultline runs in."
  value       = local.namespace
}

output "coordinator_address" {
  description = "The coordinator's in-cluster gRPC address (mutual TLS), for faultctl --coordinator inside the cluster or through kubectl port-forward."
  value       = "https://${local.service}:${var.coordinator_ports.grpc}"
}

output "enroll_address" {
  description = "The coordinator's in-cluster enrollment address; hosts outside the cluster (terraform/modules/host) need it exposed (coordinator_service_type)."
  value       = "https://${local.service}:${var.coordinator_ports.enroll}"
}

output "ca_bundle" {
  description = "PEM of the CA that signed the coordinator's certificate: what agents outside the cluster (the host module's ca_pem) and faultctl trust."
  # A CA certificate is public; supplied_tls is sensitive as a whole.
  value = try(nonsensitive(local.ca_bundle), local.ca_bundle)
}

output "admin_cert_pem" {
  description = "tls_source generate: an admin client certificate for faultctl (admin.pem); null otherwise."
  value       = var.tls_source == "generate" ? tls_locally_signed_cert.admin[0].cert_pem : null
}

output "admin_key_pem" {
  description = "tls_source generate: the admin certificate's key (admin-key.pem); null otherwise."
  value       = var.tls_source == "generate" ? tls_private_key.admin[0].private_key_pem_pkcs8 : null
  sensitive   = true
}

output "release" {
  description = "The Helm release's name, chart version and status."
  value = {
    name    = helm_release.faultline.name
    version = helm_release.faultline.version
    status  = helm_release.faultline.status
  }
}

locals {
  ca_bundle = var.tls_source == "cert_manager" ? try(data.kubernetes_secret_v1.cert_manager_ca[0].data["ca.crt"], null) : local.tls.ca_pem
}
