"""criops' test world, importable from the checkout's root: real podman test hosts
(hosts), a throwaway etcd + kube-apiserver (control_plane), criops' CRD, RBAC and
operator process on it (cluster), and the roles' filter plugins as modules
(filter_plugins). The integration tests, the demo and the benchmarks use it; run
its programs as modules from the checkout's root (`python -m testworld.demo`).
"""
