output "coordinator_address" {
  description = "The coordinator's in-cluster address (faultctl through kubectl port-forward)."
  value       = module.faultline.coordinator_address
}

output "ca_bundle" {
  description = "The CA faultctl and out-of-cluster agents trust."
  value       = module.faultline.ca_bundle
}

output "admin_cert_pem" {
  description = "faultctl's admin certificate (admin.pem)."
  value       = module.faultline.admin_cert_pem
}

output "admin_key_pem" {
  description = "faultctl's admin key (admin-key.pem)."
  value       = module.faultline.admin_key_pem
  sensitive   = true
}
