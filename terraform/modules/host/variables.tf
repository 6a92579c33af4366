# ---- Where the agent goes ----------------------------------------------------------------

variable "hosts" {
  description = <<-EOT
    Existing Linux hosts to install the agent on over SSH, by node name (the name the agent
    registers with: 1..=253 lowercase letters, digits, '-' or '.', starting and ending with a
    letter or digit). address: what SSH connects to; port: SSH port (1..=65535, default 22);
    labels: labels of this host only, merged over var.labels. Empty: no SSH install (use the
    cloud_init output for new VMs).
  EOT
  type = map(object({
    address = string
    port    = optional(number, 22)
    labels  = optional(map(string), {})
  }))
  default = {}

  validation {
    condition     = alltrue([for name, _ in var.hosts : length(name) <= 253 && can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", name))])
    error_message = "hosts: every key is a node name: 1..=253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit."
  }
  validation {
    condition     = alltrue([for _, h in var.hosts : h.port >= 1 && h.port <= 65535 && floor(h.port) == h.port])
    error_message = "hosts[*].port: an SSH port is an integer in 1..=65535."
  }
  validation {
    condition     = alltrue([for _, h in var.hosts : length(trimspace(h.address)) > 0])
    error_message = "hosts[*].address: give the host name or IP address SSH connects to (1 or more characters)."
  }
}

variable "ssh" {
  description = <<-EOT
    How Terraform's SSH communicator logs in to every host in var.hosts: user (root, or a user
    with passwordless sudo), host_key (the hosts' public host key, or the CA key their host
    certificates are signed with; null accepts any host key, which only a test network should
    do), timeout (a number and s, m or h, such as 5m) and script_path (where remote-exec
    uploads its scripts, default /tmp/terraform_%RAND%.sh; Terraform leaves them there, empty).
  EOT
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
  description = "Root the files go under: / for a real install (/usr/local/bin, /etc/faultline, /var/lib/faultline), another absolute directory to keep everything below it (an image, a test). install_mode systemd needs /."
  type        = string
  default     = "/"

  validation {
    condition     = startswith(var.install_prefix, "/") && !strcontains(var.install_prefix, "..") && !strcontains(var.install_prefix, "'")
    error_message = "install_prefix: an absolute path (starting with /) without '..' or quotes."
  }
}

variable "install_mode" {
  description = "How the agent is run: systemd (the unit faultline-agent.service, enabled and started), process (its own session with a pid file, where systemd is not PID 1; nothing restarts it) or auto (systemd when it is PID 1 and install_prefix is /, process otherwise)."
  type        = string
  default     = "auto"

  validation {
    condition     = contains(["auto", "systemd", "process"], var.install_mode)
    error_message = "install_mode: one of auto, systemd, process."
  }
  validation {
    condition     = var.install_mode != "systemd" || var.install_prefix == "/"
    error_message = "install_mode: systemd loads units from /etc/systemd/system only, so it needs install_prefix = \"/\" (use process or auto with another prefix)."
  }
}

variable "staging_dir" {
  description = "Directory on each host the install files are copied to first (created 0700, removed when done). An absolute path."
  type        = string
  default     = "/var/tmp/faultline-terraform"

  validation {
    condition     = startswith(var.staging_dir, "/") && length(var.staging_dir) > 1 && !strcontains(var.staging_dir, "..") && !strcontains(var.staging_dir, "'")
    error_message = "staging_dir: an absolute path other than / without '..' or quotes."
  }
}

# ---- The agent binary ----------------------------------------------------------------------

variable "agent_binary_path" {
  description = "Path, on the machine running Terraform, of the faultline-agent binary to copy to each host over SSH (cargo build --release -p faultline-agent). Null: the hosts download agent_binary_url."
  type        = string
  default     = null

  validation {
    condition     = var.agent_binary_path == null || try(fileexists(var.agent_binary_path), false)
    error_message = "agent_binary_path: an existing file on the machine running Terraform (cargo build --release -p faultline-agent), or null."
  }
}

variable "agent_binary_url" {
  description = "https URL each host downloads faultline-agent from (cloud_init always, SSH when agent_binary_path is null). Needs agent_binary_sha256."
  type        = string
  default     = null

  validation {
    condition     = var.agent_binary_url == null || can(regex("^https://[^\\s']+$", var.agent_binary_url))
    error_message = "agent_binary_url: an https:// URL without spaces or quotes."
  }
}

variable "agent_binary_sha256" {
  description = "SHA-256 of the binary at agent_binary_url (64 lowercase hex digits); the download is refused when it differs."
  type        = string
  default     = null

  validation {
    condition     = var.agent_binary_sha256 == null || can(regex("^[a-f0-9]{64}$", var.agent_binary_sha256))
    error_message = "agent_binary_sha256: 64 lowercase hex digits."
  }
}

# ---- The coordinator and enrollment --------------------------------------------------------

variable "coordinator_url" {
  description = "The coordinator's gRPC address, https://HOST[:PORT] (port 1..=65535, default 7443), by a name or IP its certificate carries."
  type        = string

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.\\-\\[\\]:]+(:[0-9]{1,5})?$", var.coordinator_url))
    error_message = "coordinator_url: https://HOST[:PORT] with a port in 1..=65535 (there is no plaintext mode)."
  }
}

variable "enroll_url" {
  description = "The coordinator's enrollment listener, https://HOST:PORT. Null: the coordinator_url host, the next port (7444)."
  type        = string
  default     = null

  validation {
    condition     = var.enroll_url == null || can(regex("^https://[A-Za-z0-9.\\-\\[\\]:]+(:[0-9]{1,5})?$", var.enroll_url))
    error_message = "enroll_url: https://HOST[:PORT] with a port in 1..=65535."
  }
}

variable "ca_pem" {
  description = "PEM of the CA that signed the coordinator's certificate (ca.pem); the agent enrolls only with a coordinator it proves."
  type        = string

  validation {
    condition     = strcontains(var.ca_pem, "-----BEGIN CERTIFICATE-----")
    error_message = "ca_pem: the PEM text of a CA certificate (-----BEGIN CERTIFICATE-----)."
  }
}

variable "join_token" {
  description = "Join token from `faultctl tokens create --uses N` (N at least the number of hosts): <6 hex digits>.<64 hex digits>. The agent enrolls with it at its first start and ignores it afterwards."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[0-9a-f]{6}\\.[0-9a-f]{64}$", trimspace(var.join_token)))
    error_message = "join_token: <id>.<secret>, a 6-hex-digit id and a 64-hex-digit secret, as printed by faultctl tokens create."
  }
}

variable "labels" {
  description = "Labels of every host, for experiments' agent selectors: keys [prefix/]name with name 1..=63 of letters, digits, '-', '_', '.'; values 0..=63 of the same. The token's labels win for the same key."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$", k)) && can(regex("^([A-Za-z0-9_.-]{0,63})$", v))])
    error_message = "labels: keys [prefix/]name with name 1..=63 of letters, digits, '-', '_', '.' (starting and ending with a letter or digit); values 0..=63 of letters, digits, '-', '_', '.'."
  }
}

variable "metrics_listen" {
  description = "Where each agent serves /metrics, /healthz and /readyz: ADDR:PORT (port 1..=65535) or none."
  type        = string
  default     = "0.0.0.0:9465"

  validation {
    condition     = var.metrics_listen == "none" || can(regex("^[0-9a-fA-F.:\\[\\]]+:[0-9]{1,5}$", var.metrics_listen))
    error_message = "metrics_listen: ADDR:PORT with a port in 1..=65535, or none."
  }
}

variable "wait_ready_seconds" {
  description = "SSH install: seconds (0..=600) to wait for each agent's /readyz (a session with the coordinator) before the apply fails; 0 does not wait. Needs curl on the host."
  type        = number
  default     = 60

  validation {
    condition     = var.wait_ready_seconds >= 0 && var.wait_ready_seconds <= 600 && floor(var.wait_ready_seconds) == var.wait_ready_seconds
    error_message = "wait_ready_seconds: an integer in 0..=600."
  }
}

# ---- The agent's own limits (agent.toml) ---------------------------------------------------

variable "agent_limits" {
  description = <<-EOT
    The agent's local limits ([limits] of agent.toml), enforced even when the coordinator asks
    for more (docs/fault-engine.md): max_concurrent_faults 1..=1000 (default 16), max_duration
    1s..=7d as a number and one unit s, m, h or d (default 1h), allowed_kinds (a subset of
    network, drop, partition, cpu, memory, io, process; null: all), io_paths (absolute
    directories io faults may write to; default /var/tmp and /tmp), protected_names (regexes on
    a process's comm or command line; null: the agent's default ^sshd$, ^kubelet$,
    ^containerd$, ^dockerd$), protected_pids.
  EOT
  type = object({
    max_concurrent_faults = optional(number, 16)
    max_duration          = optional(string, "1h")
    allowed_kinds         = optional(list(string))
    io_paths              = optional(list(string), ["/var/tmp", "/tmp"])
    protected_names       = optional(list(string))
    protected_pids        = optional(list(number), [])
  })
  default = {}

  validation {
    condition     = var.agent_limits.max_concurrent_faults >= 1 && var.agent_limits.max_concurrent_faults <= 1000 && floor(var.agent_limits.max_concurrent_faults) == var.agent_limits.max_concurrent_faults
    error_message = "agent_limits.max_concurrent_faults: an integer in 1..=1000."
  }
  validation {
    condition = can(regex("^[0-9]+(s|m|h|d)$", var.agent_limits.max_duration)) && try(
      tonumber(regex("^[0-9]+", var.agent_limits.max_duration)) * lookup({ s = 1, m = 60, h = 3600, d = 86400 }, regex("[smhd]$", var.agent_limits.max_duration)) >= 1 &&
      tonumber(regex("^[0-9]+", var.agent_limits.max_duration)) * lookup({ s = 1, m = 60, h = 3600, d = 86400 }, regex("[smhd]$", var.agent_limits.max_duration)) <= 604800,
    false)
    error_message = "agent_limits.max_duration: 1s..=7d, a number and one unit s, m, h or d (e.g. 1h)."
  }
  validation {
    condition     = var.agent_limits.allowed_kinds == null || alltrue([for k in coalesce(var.agent_limits.allowed_kinds, []) : contains(["network", "drop", "partition", "cpu", "memory", "io", "process"], k)])
    error_message = "agent_limits.allowed_kinds: each one of network, drop, partition, cpu, memory, io, process."
  }
  validation {
    condition     = alltrue([for p in var.agent_limits.io_paths : startswith(p, "/") && !strcontains(p, "..")])
    error_message = "agent_limits.io_paths: absolute directories (starting with /) without '..'."
  }
  validation {
    condition     = alltrue([for p in var.agent_limits.protected_pids : p >= 1 && p <= 4194304 && floor(p) == p])
    error_message = "agent_limits.protected_pids: process ids in 1..=4194304."
  }
}
