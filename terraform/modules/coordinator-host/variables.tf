# ---- Where the coordinator goes -----------------------------------------------------------

variable "host" {
  description = "The existing Linux host to install the coordinator on over SSH: address (what SSH connects to and, unless advertise_address is set, what agents use) and port (SSH port, 1..=65535, default 22). Null: no SSH install (use the cloud_init output for a new VM)."
  type = object({
    address = string
    port    = optional(number, 22)
  })
  default = null

  validation {
    condition     = var.host == null || try(var.host.port >= 1 && var.host.port <= 65535 && floor(var.host.port) == var.host.port, false)
    error_message = "host.port: an SSH port is an integer in 1..=65535."
  }
}

variable "advertise_address" {
  description = "The name or IP agents and faultctl reach the coordinator by (a name in its certificate). Null: host.address."
  type        = string
  default     = null

  validation {
    condition     = var.advertise_address == null || can(regex("^[A-Za-z0-9.:-]{1,253}$", var.advertise_address))
    error_message = "advertise_address: a DNS name or IP address, 1..=253 of letters, digits, '.', ':' and '-', or null."
  }
}

variable "ssh" {
  description = "How Terraform's SSH communicator logs in: user (root, or a user with passwordless sudo), host_key (the host's public key or its host-certificate CA; null accepts any, for test networks only), timeout (a number and s, m or h) and script_path (where remote-exec uploads its scripts, default /tmp/terraform_%RAND%.sh; Terraform leaves them there, empty)."
  type = object({
    user     = optional(string, "root")
    host_key = optional(string)
    timeout  = optional(string, "5m")
    # Where remote-exec uploads its scripts on the host. Terraform empties each one after it
    # ran but leaves the file, so an install leaves a few empty files here.
    script_path = optional(string, "/tmp/terraform_%RAND%.sh")
  })
  default = {}

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh.user))
    error_message = "ssh.user: a Linux user name, 1..=32 of a-z, 0-9, '_' or '-', not starting with a digit or '-'."
  }
  validation {
    condition     = can(regex("^[0-9]+(s|m|h)$", var.ssh.timeout))
    error_message = "ssh.timeout: a number and s, m or h, such as 30s, 5m or 1h."
  }
  validation {
    condition     = can(regex("^/[^ ']*%RAND%[^ ']*$", var.ssh.script_path))
    error_message = "ssh.script_path: an absolute path without spaces or quotes that contains %RAND% (each script gets its own file), such as /var/tmp/terraform_%RAND%.sh."
  }
}

variable "ssh_private_key" {
  description = "Private key (PEM or OpenSSH text) the SSH communicator logs in with; null uses the running ssh-agent. Kept in the state for terraform destroy: protect the state."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.ssh_private_key == null || try(strcontains(var.ssh_private_key, "PRIVATE KEY"), false)
    error_message = "ssh_private_key: the text of a PEM or OpenSSH private key (-----BEGIN ... PRIVATE KEY-----), or null for the ssh-agent."
  }
}

variable "install_prefix" {
  description = "Root the files go under: / for a real install, another absolute directory to keep everything below it (an image, a test). install_mode systemd needs /."
  type        = string
  default     = "/"

  validation {
    condition     = startswith(var.install_prefix, "/") && !strcontains(var.install_prefix, "..") && !strcontains(var.install_prefix, "'")
    error_message = "install_prefix: an absolute path (starting with /) without '..' or quotes."
  }
}

variable "install_mode" {
  description = "systemd (faultline-coordinator.service with its sandbox), process (its own session as the user faultline without capabilities, where systemd is not PID 1; no sandbox, nothing restarts it) or auto (systemd when it is PID 1 and install_prefix is /, process otherwise)."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "systemd", "process"], var.install_mode)
    error_message = "install_mode: one of auto, systemd, process."
  }
  validation {
    condition     = var.install_mode != "systemd" || var.install_prefix == "/"
    error_message = "install_mode: systemd loads units from /etc/systemd/system only, so it needs install_prefix = \"/\"."
  }
}

variable "staging_dir" {
  description = "Directory on the host the install files are copied to first (created 0700, removed when done). An absolute path."
  type        = string
  default     = "/var/tmp/faultline-coordinator-terraform"

  validation {
    condition     = startswith(var.staging_dir, "/") && length(var.staging_dir) > 1 && !strcontains(var.staging_dir, "..") && !strcontains(var.staging_dir, "'")
    error_message = "staging_dir: an absolute path other than / without '..' or quotes."
  }
}

# ---- Binaries --------------------------------------------------------------------------------

variable "coordinator_binary_path" {
  description = "Path, on the machine running Terraform, of the faultline-coordinator binary to copy over SSH. Null: the host downloads coordinator_binary_url."
  type        = string
  default     = null

  validation {
    condition     = var.coordinator_binary_path == null || try(fileexists(var.coordinator_binary_path), false)
    error_message = "coordinator_binary_path: an existing file on the machine running Terraform (cargo build --release -p faultline-coordinator), or null."
  }
}

variable "coordinator_binary_url" {
  description = "https URL the host downloads faultline-coordinator from (cloud_init always, SSH when coordinator_binary_path is null). Needs coordinator_binary_sha256."
  type        = string
  default     = null

  validation {
    condition     = var.coordinator_binary_url == null || can(regex("^https://[^\\s']+$", var.coordinator_binary_url))
    error_message = "coordinator_binary_url: an https:// URL without spaces or quotes."
  }
}

variable "coordinator_binary_sha256" {
  description = "SHA-256 of the binary at coordinator_binary_url: 64 lowercase hex digits."
  type        = string
  default     = null

  validation {
    condition     = var.coordinator_binary_sha256 == null || can(regex("^[a-f0-9]{64}$", var.coordinator_binary_sha256))
    error_message = "coordinator_binary_sha256: 64 lowercase hex digits."
  }
}

variable "faultctl_binary_path" {
  description = "Path of a faultctl binary to install beside the coordinator (SSH only); null installs none."
  type        = string
  default     = null

  validation {
    condition     = var.faultctl_binary_path == null || try(fileexists(var.faultctl_binary_path), false)
    error_message = "faultctl_binary_path: an existing file on the machine running Terraform (cargo build --release -p faultctl), or null."
  }
}

# ---- Certificates ----------------------------------------------------------------------------

variable "tls" {
  description = "The coordinator's certificates (PEM): ca_pem (the CA clients are checked against and agents trust), cert_pem (the coordinator's certificate: URI SAN spiffe://faultline/coordinator/coordinator and the advertised name; `faultctl certs init --san NAME`), key_pem."
  type = object({
    ca_pem   = string
    cert_pem = string
    key_pem  = string
  })
  sensitive = true

  validation {
    condition     = strcontains(var.tls.ca_pem, "BEGIN CERTIFICATE") && strcontains(var.tls.cert_pem, "BEGIN CERTIFICATE") && strcontains(var.tls.key_pem, "PRIVATE KEY")
    error_message = "tls: ca_pem and cert_pem are PEM certificates (BEGIN CERTIFICATE), key_pem a PEM private key (PRIVATE KEY)."
  }
}

variable "issuer" {
  description = "The CA the coordinator signs agent certificates with at enrollment (PEM: cert_pem, then its chain if it is an intermediate; key_pem PKCS#8). Null: no enrollment listener (agents need certificate files)."
  type = object({
    cert_pem = string
    key_pem  = string
  })
  default   = null
  sensitive = true

  validation {
    condition     = var.issuer == null || try(strcontains(var.issuer.cert_pem, "BEGIN CERTIFICATE") && strcontains(var.issuer.key_pem, "PRIVATE KEY"), false)
    error_message = "issuer: cert_pem a PEM certificate (BEGIN CERTIFICATE), key_pem a PEM PKCS#8 key (BEGIN PRIVATE KEY)."
  }
}

variable "agent_cert_ttl" {
  description = "Lifetime of the agent certificates the issuer signs, 1m..=30d: a number and one unit m, h or d (agents renew at two thirds of it)."
  type        = string
  default     = "24h"

  validation {
    condition = can(regex("^[0-9]+(m|h|d)$", var.agent_cert_ttl)) && try(
      tonumber(regex("^[0-9]+", var.agent_cert_ttl)) * lookup({ m = 60, h = 3600, d = 86400 }, regex("[mhd]$", var.agent_cert_ttl)) >= 60 &&
      tonumber(regex("^[0-9]+", var.agent_cert_ttl)) * lookup({ m = 60, h = 3600, d = 86400 }, regex("[mhd]$", var.agent_cert_ttl)) <= 2592000,
    false)
    error_message = "agent_cert_ttl: 1m..=30d, a number and one unit m, h or d (e.g. 24h)."
  }
}

# ---- Listeners -------------------------------------------------------------------------------

variable "listen_address" {
  description = "The address the coordinator's listeners bind: 0.0.0.0 (every interface), or one IPv4 address."
  type        = string
  default     = "0.0.0.0"

  validation {
    condition     = can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", var.listen_address))
    error_message = "listen_address: an IPv4 address such as 0.0.0.0 or 10.0.0.5."
  }
}

variable "ports" {
  description = "grpc (mutual TLS, agents and faultctl; default 7443), enroll (agents' enrollment; 7444), metrics (plain-HTTP /metrics, /healthz, /readyz; 9466): each 1..=65535 and all different."
  type = object({
    grpc    = optional(number, 7443)
    enroll  = optional(number, 7444)
    metrics = optional(number, 9466)
  })
  default = {}

  validation {
    condition     = alltrue([for p in [var.ports.grpc, var.ports.enroll, var.ports.metrics] : p >= 1 && p <= 65535 && floor(p) == p]) && length(distinct([var.ports.grpc, var.ports.enroll, var.ports.metrics])) == 3
    error_message = "ports: grpc, enroll and metrics are integers in 1..=65535, all different."
  }
}

variable "wait_ready_seconds" {
  description = "SSH install: seconds (0..=600) to wait for /readyz before the apply fails; 0 does not wait. Needs curl on the host."
  type        = number
  default     = 60

  validation {
    condition     = var.wait_ready_seconds >= 0 && var.wait_ready_seconds <= 600 && floor(var.wait_ready_seconds) == var.wait_ready_seconds
    error_message = "wait_ready_seconds: an integer in 0..=600."
  }
}

# ---- Policy ----------------------------------------------------------------------------------

variable "policy" {
  description = "The blast-radius policy ([policy] of coordinator.toml, docs/experiments.md): max_fleet_percent_under_fault 1..=100 (default 50), max_concurrent_experiments 1..=1000 (5), max_duration 1s..=7d as a number and one unit s, m, h or d (1h), protected_agent_labels (agents never targeted)."
  type = object({
    max_fleet_percent_under_fault = optional(number, 50)
    max_concurrent_experiments    = optional(number, 5)
    max_duration                  = optional(string, "1h")
    protected_agent_labels        = optional(map(string), { "faultline.dev/protected" = "true" })
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
    condition = can(regex("^[0-9]+(s|m|h|d)$", var.policy.max_duration)) && try(
      tonumber(regex("^[0-9]+", var.policy.max_duration)) * lookup({ s = 1, m = 60, h = 3600, d = 86400 }, regex("[smhd]$", var.policy.max_duration)) >= 1 &&
      tonumber(regex("^[0-9]+", var.policy.max_duration)) * lookup({ s = 1, m = 60, h = 3600, d = 86400 }, regex("[smhd]$", var.policy.max_duration)) <= 604800,
    false)
    error_message = "policy.max_duration: 1s..=7d, a number and one unit s, m, h or d (e.g. 1h)."
  }
}
