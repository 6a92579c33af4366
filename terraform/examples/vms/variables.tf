variable "release_url" {
  description = "Base https URL your pipeline publishes the release binaries under (faultline-agent and faultline-coordinator, built with cargo build --release)."
  type        = string

  validation {
    condition     = can(regex("^https://[^\\s']+[^/]$", var.release_url))
    error_message = "release_url: an https:// URL without a trailing slash, spaces or quotes."
  }
}

variable "agent_sha256" {
  description = "SHA-256 of faultline-agent at release_url: 64 lowercase hex digits."
  type        = string

  validation {
    condition     = can(regex("^[a-f0-9]{64}$", var.agent_sha256))
    error_message = "agent_sha256: 64 lowercase hex digits."
  }
}

variable "coordinator_sha256" {
  description = "SHA-256 of faultline-coordinator at release_url: 64 lowercase hex digits."
  type        = string

  validation {
    condition     = can(regex("^[a-f0-9]{64}$", var.coordinator_sha256))
    error_message = "coordinator_sha256: 64 lowercase hex digits."
  }
}

variable "coordinator_address" {
  description = "The name (or fixed IP) the coordinator VM gets, as its certificate names it (faultctl certs init --san)."
  type        = string
  default     = "coordinator.example.internal"

  validation {
    condition     = can(regex("^[A-Za-z0-9.:-]{1,253}$", var.coordinator_address))
    error_message = "coordinator_address: a DNS name or IP address, 1..=253 of letters, digits, '.', ':' and '-'."
  }
}

variable "certs_dir" {
  description = "Directory of `faultctl certs init --san <coordinator_address>` on the machine running Terraform (ca.pem, ca-key.pem, coordinator.pem, coordinator-key.pem)."
  type        = string
  default     = "./faultline-certs"

  validation {
    condition     = fileexists("${var.certs_dir}/ca.pem")
    error_message = "certs_dir: a directory holding ca.pem, ca-key.pem, coordinator.pem and coordinator-key.pem (faultctl certs init)."
  }
}

variable "join_token" {
  description = "From `faultctl tokens create --uses N --ttl 24h --labels env=staging` once the coordinator runs: <6 hex>.<64 hex>."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[0-9a-f]{6}\\.[0-9a-f]{64}$", trimspace(var.join_token)))
    error_message = "join_token: <id>.<secret>, a 6-hex-digit id and a 64-hex-digit secret, as printed by faultctl tokens create."
  }
}
