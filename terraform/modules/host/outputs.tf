output "agents" {
  description = "The hosts the agent was installed on over SSH: node name => address:port."
  value       = { for name, h in var.hosts : name => "${h.address}:${h.port}" }
}

output "install_mode" {
  description = "The install_mode asked for (auto resolves per host: systemd when it is PID 1 and install_prefix is /, process otherwise; the apply log says which)."
  value       = var.install_mode
}

output "cloud_init" {
  description = "cloud-config user-data that installs the agent at a new VM's first boot and enrolls it with the join token (node name: the VM's hostname). Needs agent_binary_url and agent_binary_sha256; null without them. Holds the join token: treat it as a secret."
  value       = local.cloud_init
  sensitive   = true
}

output "cloud_init_base64gzip" {
  description = "cloud_init, gzip-compressed and base64-encoded, for providers with a user-data size limit (AWS: user_data_base64, 16 KiB)."
  value       = local.cloud_init == null ? null : base64gzip(local.cloud_init)
  sensitive   = true
}
