"""Fixtures for the sharing tests: the gateway's (the real app on the real local spawner) and
the Kubernetes tests' (the fake API server and a kubeconfig pointing at it)."""
from tests.gateway.conftest import gateway  # noqa: F401
from tests.kube.conftest import api, kubeconfig  # noqa: F401
