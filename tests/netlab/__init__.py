"""The network lab: namespaces, NAT, a UDP block and a delay/loss/rate relay (see lab.py)."""
from tests.netlab.lab import NetLab, Namespace, LabError, unavailable, sweep_stale, lab_namespaces
from tests.netlab.relay import Impairment

__all__ = ["NetLab", "Namespace", "LabError", "Impairment", "unavailable", "sweep_stale", "lab_namespaces"]
