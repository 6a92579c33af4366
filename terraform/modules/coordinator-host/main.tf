# The Faultline coordinator on a Linux host: over SSH with the built-in file and remote-exec
# provisioners on terraform_data, and as cloud-init user-data for a new VM (outputs.tf). Both
# run the repository's scripts/install-host.sh (binary, unit, the system user faultline, env
# and TOML) driven by files/faultline-coordinator-host.sh. `terraform destroy` stops it with
# SIGTERM (running experiments are aborted and the agents revert) and removes its files and
# its store.

# ---- What is installed ---------------------------------------------------------------------

locals {
  repo    = "${path.module}/../../.."
  address = coalesce(var.advertise_address, try(var.host.address, null), "coordinator.invalid")

  bundle = {
    "scripts/install-host.sh"                        = file("${local.repo}/scripts/install-host.sh")
    "coordinator/dist/faultline-coordinator.service" = file("${local.repo}/coordinator/dist/faultline-coordinator.service")
    "coordinator/dist/coordinator.env"               = file("${local.repo}/coordinator/dist/coordinator.env")
    "coordinator/dist/faultline.sysusers"            = file("${local.repo}/coordinator/dist/faultline.sysusers")
    "coordinator/dist/coordinator.toml"              = local.coordinator_toml
    "docs/bare-metal.md"                             = file("${local.repo}/docs/bare-metal.md")
    "faultline-coordinator-host.sh"                  = file("${path.module}/files/faultline-coordinator-host.sh")
  }

  coordinator_toml = join("\n", [
    "# Written by terraform/modules/coordinator-host from var.policy (docs/experiments.md).",
    "[policy]",
    "max_fleet_percent_under_fault = ${var.policy.max_fleet_percent_under_fault}",
    "max_concurrent_experiments = ${var.policy.max_concurrent_experiments}",
    "max_duration = ${jsonencode(var.policy.max_duration)}",
    "protected_agent_labels = { ${join(", ", [for k, v in var.policy.protected_agent_labels : "${jsonencode(k)} = ${jsonencode(v)}"])} }",
    "",
  ])

  settings = join("\n", [
    "PREFIX='${var.install_prefix}'",
    "MODE='${var.install_mode}'",
    "LISTEN_ADDRESS='${var.listen_address}'",
    "GRPC_PORT=${var.ports.grpc}",
    "ENROLL_PORT=${var.ports.enroll}",
    "METRICS_PORT=${var.ports.metrics}",
    "AGENT_CERT_TTL='${var.agent_cert_ttl}'",
    "WAIT_READY_SECONDS=${var.wait_ready_seconds}",
    "BINARY_URL='${coalesce(var.coordinator_binary_url, "none")}'",
    "BINARY_SHA256='${coalesce(var.coordinator_binary_sha256, "none")}'",
    "",
  ])

  # Certificates by their path in the staging dir (sensitive; written 0640 root:faultline).
  certs = merge(
    {
      "tls/ca.pem"              = var.tls.ca_pem
      "tls/coordinator.pem"     = var.tls.cert_pem
      "tls/coordinator-key.pem" = var.tls.key_pem
    },
    var.issuer == null ? {} : {
      "tls/issuer.pem"     = var.issuer.cert_pem
      "tls/issuer-key.pem" = var.issuer.key_pem
    },
  )

  sudo      = var.ssh.user == "root" ? "" : "sudo -n "
  binary_id = var.coordinator_binary_path != null ? filesha256(var.coordinator_binary_path) : "${coalesce(var.coordinator_binary_url, "none")} ${coalesce(var.coordinator_binary_sha256, "none")}"
  no_binary = "${path.module}/../host/files/no-binary.txt"
}

# ---- Over SSH ------------------------------------------------------------------------------

resource "terraform_data" "coordinator" {
  count = var.host == null ? 0 : 1

  triggers_replace = {
    binary   = local.binary_id
    faultctl = var.faultctl_binary_path == null ? "" : filesha256(var.faultctl_binary_path)
    settings = local.settings
    bundle   = sha256(jsonencode(local.bundle))
    certs    = sha256(jsonencode(local.certs))
    address  = "${var.host.address}:${var.host.port}"
  }

  # Everything `terraform destroy` needs: destroy-time provisioners may only refer to self.
  input = {
    address     = var.host.address
    port        = var.host.port
    user        = var.ssh.user
    host_key    = var.ssh.host_key
    timeout     = var.ssh.timeout
    script_path = var.ssh.script_path
    private_key = var.ssh_private_key
    prefix      = var.install_prefix
    staging     = var.staging_dir
    sudo        = local.sudo
    script      = local.bundle["faultline-coordinator-host.sh"]
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
      condition     = var.coordinator_binary_path != null || (var.coordinator_binary_url != null && var.coordinator_binary_sha256 != null)
      error_message = "coordinator_binary_path, or coordinator_binary_url with coordinator_binary_sha256: the SSH install needs a binary to copy or to download."
    }
  }

  provisioner "remote-exec" {
    inline = [
      "rm -rf '${var.staging_dir}' 2>/dev/null || ${local.sudo}rm -rf '${var.staging_dir}'",
      "umask 077 && mkdir -p '${var.staging_dir}' && cd '${var.staging_dir}' && mkdir scripts coordinator coordinator/dist docs bin tls",
    ]
  }

  provisioner "file" {
    content     = local.bundle["scripts/install-host.sh"]
    destination = "${var.staging_dir}/scripts/install-host.sh"
  }
  provisioner "file" {
    content     = local.bundle["coordinator/dist/faultline-coordinator.service"]
    destination = "${var.staging_dir}/coordinator/dist/faultline-coordinator.service"
  }
  provisioner "file" {
    content     = local.bundle["coordinator/dist/coordinator.env"]
    destination = "${var.staging_dir}/coordinator/dist/coordinator.env"
  }
  provisioner "file" {
    content     = local.bundle["coordinator/dist/faultline.sysusers"]
    destination = "${var.staging_dir}/coordinator/dist/faultline.sysusers"
  }
  provisioner "file" {
    content     = local.bundle["coordinator/dist/coordinator.toml"]
    destination = "${var.staging_dir}/coordinator/dist/coordinator.toml"
  }
  provisioner "file" {
    content     = local.bundle["docs/bare-metal.md"]
    destination = "${var.staging_dir}/docs/bare-metal.md"
  }
  provisioner "file" {
    content     = local.bundle["faultline-coordinator-host.sh"]
    destination = "${var.staging_dir}/faultline-coordinator-host.sh"
  }
  provisioner "file" {
    content     = local.settings
    destination = "${var.staging_dir}/settings.env"
  }
  provisioner "file" {
    content     = var.tls.ca_pem
    destination = "${var.staging_dir}/tls/ca.pem"
  }
  provisioner "file" {
    content     = var.tls.cert_pem
    destination = "${var.staging_dir}/tls/coordinator.pem"
  }
  provisioner "file" {
    content     = var.tls.key_pem
    destination = "${var.staging_dir}/tls/coordinator-key.pem"
  }
  # The issuer, or empty files (no enrollment listener).
  provisioner "file" {
    content     = var.issuer == null ? "" : var.issuer.cert_pem
    destination = "${var.staging_dir}/tls/issuer.pem"
  }
  provisioner "file" {
    content     = var.issuer == null ? "" : var.issuer.key_pem
    destination = "${var.staging_dir}/tls/issuer-key.pem"
  }
  provisioner "file" {
    source      = coalesce(var.coordinator_binary_path, local.no_binary)
    destination = "${var.staging_dir}/bin/faultline-coordinator"
  }
  provisioner "file" {
    source      = coalesce(var.faultctl_binary_path, local.no_binary)
    destination = "${var.staging_dir}/bin/faultctl"
  }

  provisioner "remote-exec" {
    inline = [
      "${local.sudo}bash '${var.staging_dir}/faultline-coordinator-host.sh' install '${var.staging_dir}'; rc=$?; ${local.sudo}rm -rf '${var.staging_dir}'; exit $rc",
    ]
  }

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

# ---- cloud-init ----------------------------------------------------------------------------

locals {
  cloud_init = var.coordinator_binary_url == null || var.coordinator_binary_sha256 == null ? null : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    staging = var.staging_dir
    files   = { for rel, text in merge(local.bundle, local.certs, { "settings.env" = local.settings }) : rel => base64gzip(text) }
  })
}
