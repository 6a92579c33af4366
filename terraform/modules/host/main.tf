# The Faultline agent on existing Linux hosts: over SSH with the built-in file and remote-exec
# provisioners on terraform_data (one per host), and as cloud-init user-data for new VMs
# (outputs.tf). Both run the same files: the repository's scripts/install-host.sh and
# agent/dist, driven by files/faultline-host.sh. `terraform destroy` stops each agent with
# SIGTERM (it reverts its faults first), runs `faultline-agent recover` and removes every file.

# ---- What is installed ---------------------------------------------------------------------

locals {
  repo = "${path.module}/../../.."

  # The install files, by their path in the staging directory (install-host.sh's layout).
  bundle = {
    "scripts/install-host.sh"            = file("${local.repo}/scripts/install-host.sh")
    "agent/dist/faultline-agent.service" = file("${local.repo}/agent/dist/faultline-agent.service")
    "agent/dist/agent.env"               = file("${local.repo}/agent/dist/agent.env")
    "agent/dist/agent.toml"              = local.agent_toml
    "docs/bare-metal.md"                 = file("${local.repo}/docs/bare-metal.md")
    "faultline-host.sh"                  = file("${path.module}/files/faultline-host.sh")
    "ca.pem"                             = var.ca_pem
  }

  limits = var.agent_limits
  agent_toml = join("\n", concat(
    ["# Written by terraform/modules/host from var.agent_limits (docs/fault-engine.md).", "[limits]"],
    ["max_concurrent_faults = ${local.limits.max_concurrent_faults}"],
    ["max_duration = ${jsonencode(local.limits.max_duration)}"],
    local.limits.allowed_kinds == null ? [] : ["allowed_kinds = ${jsonencode(local.limits.allowed_kinds)}"],
    ["io_paths = ${jsonencode(local.limits.io_paths)}"],
    local.limits.protected_names == null ? [] : ["protected_names = ${jsonencode(local.limits.protected_names)}"],
    length(local.limits.protected_pids) == 0 ? [] : ["protected_pids = ${jsonencode(local.limits.protected_pids)}"],
    [""],
  ))

  # settings.env for files/faultline-host.sh; values are validated to hold no single quote.
  settings = { for name, h in merge(var.hosts, { "" = { address = "", port = 22, labels = {} } }) : name => join("\n", [
    "PREFIX='${var.install_prefix}'",
    "MODE='${var.install_mode}'",
    "COORDINATOR='${var.coordinator_url}'",
    "ENROLL_URL='${coalesce(var.enroll_url, "none")}'",
    "NODE_NAME='${name}'",
    "LABELS='${join(",", [for k, v in merge(var.labels, h.labels) : "${k}=${v}"])}'",
    "METRICS_LISTEN='${var.metrics_listen}'",
    # cloud-init ("" = the VM's hostname) does not wait: its coordinator may not be up yet.
    "WAIT_READY_SECONDS=${name == "" ? 0 : var.wait_ready_seconds}",
    "BINARY_URL='${coalesce(var.agent_binary_url, "none")}'",
    "BINARY_SHA256='${coalesce(var.agent_binary_sha256, "none")}'",
    "",
  ]) }

  sudo = var.ssh.user == "root" ? "" : "sudo -n "
  # A new binary, new settings or new install files replace (reinstall) the agent.
  binary_id = var.agent_binary_path != null ? filesha256(var.agent_binary_path) : "${coalesce(var.agent_binary_url, "none")} ${coalesce(var.agent_binary_sha256, "none")}"
}

# ---- Over SSH ------------------------------------------------------------------------------

resource "terraform_data" "agent" {
  for_each = var.hosts

  triggers_replace = {
    binary   = local.binary_id
    settings = local.settings[each.key]
    bundle   = sha256(jsonencode(local.bundle))
    address  = "${each.value.address}:${each.value.port}"
  }

  # Everything `terraform destroy` needs: destroy-time provisioners may only refer to self.
  input = {
    address     = each.value.address
    port        = each.value.port
    user        = var.ssh.user
    host_key    = var.ssh.host_key
    timeout     = var.ssh.timeout
    script_path = var.ssh.script_path
    private_key = var.ssh_private_key
    prefix      = var.install_prefix
    staging     = var.staging_dir
    sudo        = local.sudo
    script      = local.bundle["faultline-host.sh"]
  }

  connection {
    type        = "ssh"
    host        = self.input.address
    port        = self.input.port
    user        = self.input.user
    private_key = self.input.private_key
    agent       = self.input.private_key == null
    host_key    = self.input.host_key
    timeout     = self.input.timeout
    # try(): states written before script_path existed have no such input.
    script_path = try(self.input.script_path, "/tmp/terraform_%RAND%.sh")
  }

  lifecycle {
    precondition {
      condition     = var.agent_binary_path != null || (var.agent_binary_url != null && var.agent_binary_sha256 != null)
      error_message = "agent_binary_path, or agent_binary_url with agent_binary_sha256: the SSH install needs a binary to copy or to download."
    }
  }

  # A fresh staging directory the SSH user owns (mkdir fails on anything already there).
  provisioner "remote-exec" {
    inline = [
      "rm -rf '${var.staging_dir}' 2>/dev/null || ${local.sudo}rm -rf '${var.staging_dir}'",
      "umask 077 && mkdir -p '${var.staging_dir}' && cd '${var.staging_dir}' && mkdir scripts agent agent/dist docs bin",
    ]
  }

  provisioner "file" {
    content     = local.bundle["scripts/install-host.sh"]
    destination = "${var.staging_dir}/scripts/install-host.sh"
  }
  provisioner "file" {
    content     = local.bundle["agent/dist/faultline-agent.service"]
    destination = "${var.staging_dir}/agent/dist/faultline-agent.service"
  }
  provisioner "file" {
    content     = local.bundle["agent/dist/agent.env"]
    destination = "${var.staging_dir}/agent/dist/agent.env"
  }
  provisioner "file" {
    content     = local.bundle["agent/dist/agent.toml"]
    destination = "${var.staging_dir}/agent/dist/agent.toml"
  }
  provisioner "file" {
    content     = local.bundle["docs/bare-metal.md"]
    destination = "${var.staging_dir}/docs/bare-metal.md"
  }
  provisioner "file" {
    content     = local.bundle["faultline-host.sh"]
    destination = "${var.staging_dir}/faultline-host.sh"
  }
  provisioner "file" {
    content     = local.bundle["ca.pem"]
    destination = "${var.staging_dir}/ca.pem"
  }
  provisioner "file" {
    content     = local.settings[each.key]
    destination = "${var.staging_dir}/settings.env"
  }
  provisioner "file" {
    content     = "${trimspace(var.join_token)}\n"
    destination = "${var.staging_dir}/join-token"
  }
  # The binary from this machine, or files/no-binary.txt: the host then downloads
  # agent_binary_url.
  provisioner "file" {
    source      = coalesce(var.agent_binary_path, "${path.module}/files/no-binary.txt")
    destination = "${var.staging_dir}/bin/faultline-agent"
  }

  provisioner "remote-exec" {
    inline = [
      "${local.sudo}bash '${var.staging_dir}/faultline-host.sh' install '${var.staging_dir}'; rc=$?; ${local.sudo}rm -rf '${var.staging_dir}'; exit $rc",
    ]
  }

  # Destroy: SIGTERM (the agent reverts its faults), recover, remove every file.
  provisioner "file" {
    when        = destroy
    content     = self.input.script
    destination = "${self.input.staging}.uninstall.sh"
  }
  provisioner "remote-exec" {
    when = destroy
    inline = [
      "${self.input.sudo}bash '${self.input.staging}.uninstall.sh' uninstall '${self.input.prefix}'; rc=$?; ${self.input.sudo}rm -f '${self.input.staging}.uninstall.sh'; exit $rc",
    ]
  }
}
