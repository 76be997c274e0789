"""The local development cluster: etcd, the Kubernetes control plane, a node agent and S3 on loopback.

Tests use `devcluster.settings.cluster_env()` for KUBECONFIG and the S3 settings of the running cluster.
"""
