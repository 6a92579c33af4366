# An EKS cluster from the public terraform-aws-modules/eks module and Faultline on it with
# this repository's kubernetes module. Shown, not applied by the tests (README.md says why).

provider "aws" {
  region = var.region
}

module "eks" {
  # checkov:skip=CKV_TF_1: a Terraform Registry module, pinned to one exact version; a commit-hash (git) source would bypass the registry this module is published to.
  source  = "terraform-aws-modules/eks/aws"
  version = "20.37.1"

  cluster_name    = var.cluster_name
  cluster_version = "1.31"
  vpc_id          = var.vpc_id
  subnet_ids      = var.subnet_ids

  cluster_endpoint_public_access           = false
  enable_cluster_creator_admin_permissions = true

  eks_managed_node_groups = {
    default = {
      instance_types = ["m6i.large"]
      min_size       = 2
      max_size       = 4
      desired_size   = 2
    }
  }
}

data "aws_eks_cluster_auth" "this" {
  name = module.eks.cluster_name
}

provider "kubernetes" {
  host                   = module.eks.cluster_endpoint
  cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
  token                  = data.aws_eks_cluster_auth.this.token
}

provider "helm" {
  kubernetes {
    host                   = module.eks.cluster_endpoint
    cluster_ca_certificate = base64decode(module.eks.cluster_certificate_authority_data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}

module "faultline" {
  source = "../../modules/kubernetes"

  image = {
    repository  = var.faultline_image.repository
    digest      = var.faultline_image.digest
    pull_policy = "IfNotPresent"
  }
  tls_source = "generate"
  policy = {
    max_fleet_percent_under_fault = 25
    max_duration                  = "30m"
    protected_namespaces          = ["kube-system", "amazon-cloudwatch"]
  }
  monitoring = {
    pod_monitor     = false
    prometheus_rule = false
  }

  depends_on = [module.eks]
}
