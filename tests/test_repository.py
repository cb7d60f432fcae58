"""Repository-level promises: docs match the code, and the import rules hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_scenario_reference_is_generated_from_the_current_schema():
    from peergrid.scenarios.schemadoc import render

    committed = (ROOT / "docs" / "scenario.md").read_text()
    assert committed.strip() == render().strip(), "run: peergrid scenario doc > docs/scenario.md"


@pytest.mark.parametrize(
    "module",
    ["peergrid.market.operator", "peergrid.grid.operator", "peergrid.comms.messages",
     "peergrid.agents.prosumer", "peergrid.agents.policies"],
)
def test_core_modules_import_no_torch_and_no_sockets(module):
    code = (
        f"import sys, {module}; "
        "bad = [m for m in ('torch', 'zmq', 'peergrid.scenarios') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_messages_module_imports_nothing_from_peergrid():
    source = (ROOT / "comms" / "messages.py").read_text()
    assert "peergrid" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from")))
