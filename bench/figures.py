"""The one shape every benchmark figure is printed in (see `python -m bench`)."""
from __future__ import annotations

from typing import Any


def figure(name: str, value: float, unit: str, target: float | None, lower_is_better: bool = True,
           **extra: Any) -> dict[str, Any]:
    """A figure row: `met` is None when the figure has no target."""
    met = None if target is None else (value <= target if lower_is_better else value >= target)
    return {"name": name, "value": round(value, 3), "unit": unit, "target": target, "met": met, **extra}
