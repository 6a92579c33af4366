variable "region" {
  description = "AWS region of the cluster, such as eu-west-1."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region: an AWS region name such as eu-west-1."
  }
}

variable "cluster_name" {
  description = "Name of the EKS cluster: 1..=100 of letters, digits and '-', starting with a letter or digit."
  type        = string
  default     = "faultline-demo"

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9-]{0,99}$", var.cluster_name))
    error_message = "cluster_name: 1..=100 of letters, digits and '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "The VPC the cluster goes in (vpc- and hex digits)."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id: vpc- and hex digits."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the nodes (subnet- and hex digits), 2 or more."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids: 2 or more ids, each subnet- and hex digits."
  }
}

variable "faultline_image" {
  description = "The Faultline image you built from the repository's Dockerfile and pushed (ECR), pinned by digest: repository (1 or more characters) and digest (sha256:<64 hex>)."
  type = object({
    repository = string
    digest     = string
  })

  validation {
    condition     = length(var.faultline_image.repository) >= 1 && can(regex("^sha256:[a-f0-9]{64}$", var.faultline_image.digest))
    error_message = "faultline_image: repository of 1 or more characters, digest sha256: and 64 lowercase hex digits."
  }
}
