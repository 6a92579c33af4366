terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  # None: the user-data is rendered here and handed to whichever provider creates the VMs
  # (README.md shows AWS, Google Cloud and libvirt).
  required_providers {}
}
