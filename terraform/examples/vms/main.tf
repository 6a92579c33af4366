# The coordinator on one VM and the agent on many, created by any provider: both modules only
# render cloud-init user-data here (no SSH, no host yet), which the provider's VM resource
# takes (README.md).

module "coordinator" {
  source = "../../modules/coordinator-host"

  advertise_address         = var.coordinator_address
  coordinator_binary_url    = "${var.release_url}/faultline-coordinator"
  coordinator_binary_sha256 = var.coordinator_sha256
  tls = {
    ca_pem   = file("${var.certs_dir}/ca.pem")
    cert_pem = file("${var.certs_dir}/coordinator.pem")
    key_pem  = file("${var.certs_dir}/coordinator-key.pem")
  }
  # The development CA issues the agents' certificates too; an intermediate from your PKI is
  # better (docs/security.md).
  issuer = {
    cert_pem = file("${var.certs_dir}/ca.pem")
    key_pem  = file("${var.certs_dir}/ca-key.pem")
  }
  policy = {
    max_fleet_percent_under_fault = 25
    max_duration                  = "30m"
  }
}

module "agents" {
  source = "../../modules/host"

  coordinator_url     = module.coordinator.url
  enroll_url          = module.coordinator.enroll_url
  ca_pem              = file("${var.certs_dir}/ca.pem")
  join_token          = var.join_token
  agent_binary_url    = "${var.release_url}/faultline-agent"
  agent_binary_sha256 = var.agent_sha256
  labels              = { env = "staging" }
  agent_limits = {
    max_concurrent_faults = 8
    max_duration          = "30m"
    allowed_kinds         = ["network", "cpu", "memory", "process"]
  }
}
