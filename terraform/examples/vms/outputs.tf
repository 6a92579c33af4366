output "coordinator_user_data" {
  description = "cloud-init user-data for the coordinator's VM (holds its private keys)."
  value       = module.coordinator.cloud_init
  sensitive   = true
}

output "agent_user_data" {
  description = "cloud-init user-data for every agent VM (holds the join token)."
  value       = module.agents.cloud_init
  sensitive   = true
}

output "agent_user_data_base64gzip" {
  description = "The agents' user-data gzip-compressed and base64-encoded (AWS user_data_base64)."
  value       = module.agents.cloud_init_base64gzip
  sensitive   = true
}

output "coordinator_url" {
  description = "Where agents and faultctl reach the coordinator."
  value       = module.coordinator.url
}
