# cloud-config for VMs created by any provider: the same files as the SSH install, written by
# cloud-init (write_files, gzip+base64) and run once at first boot (runcmd).

locals {
  cloud_init_files = merge(local.bundle, {
    "settings.env" = local.settings[""]
    "join-token"   = "${trimspace(var.join_token)}\n"
  })

  cloud_init = var.agent_binary_url == null || var.agent_binary_sha256 == null ? null : templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    staging = var.staging_dir
    files   = { for rel, text in local.cloud_init_files : rel => base64gzip(text) }
  })
}
