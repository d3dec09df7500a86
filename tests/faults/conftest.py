# The fake Kubernetes API server and its client fixtures, shared with tests/kube.
from tests.kube.conftest import api, controllers, kube, kubeconfig  # noqa: F401
