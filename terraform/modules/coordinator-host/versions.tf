terraform {
  # terraform_data (1.4) and validation conditions that refer to other variables (1.9).
  required_version = ">= 1.9.0, < 2.0.0"

  # No provider: the SSH install uses Terraform's built-in terraform_data resource with the
  # file and remote-exec provisioners, and cloud_init is rendered with templatefile().
  required_providers {}
}
