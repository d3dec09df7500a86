"""The gateway fixtures (the real app on the real local spawner) for the sharing tests."""
from tests.gateway.conftest import gateway  # noqa: F401
