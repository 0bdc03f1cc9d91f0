"""The operator's side of the Kubernetes API: Nodes, Secrets, RuntimeNode status."""
