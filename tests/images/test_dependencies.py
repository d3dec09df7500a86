"""Each program imports only its own extra (pyproject: [gateway], [agent]), so each image can
carry only that: checked in a fresh interpreter that imports every module of one package."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not info.name.endswith(".__main__"):  # the entry points run main() on import
        importlib.import_module(info.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
# What each program must not load: the other program's dependencies, and the other program.
FOREIGN = {
    "gateway": {"aiortc", "aioice", "av", "numpy", "Xlib", "mss", "session_agent", "pylibsrtp"},
    "session_agent": {"kubernetes_asyncio", "jwt", "gateway", "yaml"},
}
SHARED = "streamwire"  # both programs import it, so it imports neither nor their dependencies


def imported(package: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, package], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("package", sorted(FOREIGN))
def test_a_program_imports_nothing_of_the_other(package: str) -> None:
    modules = imported(package)
    assert package in modules
    assert modules & FOREIGN[package] == set()


def test_the_shared_wire_needs_only_the_standard_library() -> None:
    # against what any interpreter here loads anyway (site's hooks, the editable install's finder)
    modules = imported(SHARED) - imported("json") - {SHARED}
    assert modules <= set(sys.stdlib_module_names), sorted(modules - set(sys.stdlib_module_names))


def test_extras_split_the_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda deps: {d.split(">")[0].split("[")[0].split("=")[0].strip().lower()  # noqa: E731
                          for d in deps}
    extras = project["optional-dependencies"]
    shared, gateway, agent = names(project["dependencies"]), names(extras["gateway"]), names(extras["agent"])
    assert {"aiortc", "av", "numpy", "python-xlib", "mss"} <= agent
    assert {"kubernetes-asyncio", "pyjwt"} <= gateway
    assert shared == {"aiohttp", "prometheus-client"}  # what both import
    assert not gateway & agent
    assert "gimp-streaming-platform[gateway,agent]" in extras["test"]
