"""What a session may ask for: Kubernetes quantities, and the operator's maximums per user tier
(pure). A request above its tier's maximum is refused with the limit named, before any pod or
process exists."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

KEYS = ("cpu", "memory", "gpu")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DEFAULT_TIER = "*"  # the maximums of a tier the table does not name
DEFAULT_LIMITS: dict[str, dict[str, str]] = {DEFAULT_TIER: {"cpu": "4", "memory": "8Gi", "gpu": "1"}}


def is_quantity(text: str) -> bool:
    return bool(_QUANTITY.match(text))


def quantity(text: str) -> Decimal:
    """A quantity in base units (cores, bytes, devices); ValueError if it is not one."""
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a quantity such as \"2\", \"500m\" or \"2Gi\"")
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2)]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity") from None


def parse_limits(text: str) -> dict[str, dict[str, str]]:
    """`--resource-limits`: JSON {tier: {"cpu": q, "memory": q, "gpu": n}}; "*" holds the
    maximums of tiers not named, and of resources a named tier leaves out."""
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--resource-limits is not JSON: {exc}") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ValueError('--resource-limits must map tiers to {"cpu", "memory", "gpu"} objects')
    out: dict[str, dict[str, str]] = {}
    for tier, limits in table.items():
        for key, value in limits.items():
            if key not in KEYS:
                raise ValueError(f"--resource-limits: {tier}.{key}: only {', '.join(KEYS)}")
            quantity(str(value))
        out[str(tier)] = {k: str(v) for k, v in limits.items()}
    out.setdefault(DEFAULT_TIER, dict(DEFAULT_LIMITS[DEFAULT_TIER]))
    return out


def check(resources: Mapping[str, str], tier: str,
          limits: Mapping[str, Mapping[str, str]]) -> None:
    """ValueError naming the limit when `resources` asks for more than `tier` may have."""
    own, default = limits.get(tier, {}), limits.get(DEFAULT_TIER, {})
    for key, value in resources.items():
        maximum = own.get(key, default.get(key))
        if maximum is not None and quantity(value) > quantity(maximum):
            who = f"the {tier} tier" if key in own else "this tier"
            raise ValueError(f"resources.{key} {value} is above the maximum of {maximum} for {who}")
