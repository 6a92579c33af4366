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
}

variable "certs_dir" {
  description = "Directory of `faultctl certs init --san <coordinator_address>` on the machine running Terraform (ca.pem, ca-key.pem, coordinator.pem, coordinator-key.pem)."
  type        = string
  default     = "./faultline-certs"
}

variable "join_token" {
  description = "From `faultctl tokens create --uses N --ttl 24h --labels env=staging` once the coordinator runs: <6 hex>.<64 hex>."
  type        = string
  sensitive   = true
}
