"""What stands in for the world around the operator, for the tests, the demo and the benchmark.

The Feldera API emulator, the local Kubernetes control plane (a real kube-apiserver and etcd built
from their Go modules), the process sandbox, the demo and the benchmark. The operator's image
never installs this package; `feldera_operator` never imports it (an import-linter contract).
"""
