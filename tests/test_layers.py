"""The layers of DESIGN §7, as imports: a shared layer never loads a component.

libraries (errors, paths, config, the splinter bus library) → the protocol (payloads, ranges,
faults) → the service base → the components → the CLI. Each module is imported alone in a
fresh interpreter, so what it drags in is what it imports, not what an earlier test loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

COMPONENTS = ("runa.splinfer", "runa.tieto", "runa.keeper", "runa.gilgul", "runa.chat",
              "runa.supervisor", "runa.demo", "runa.coven", "runa.whisper", "runa.cli")


def loaded_by(module: str) -> list[str]:
    """The ``runa`` modules importing ``module`` alone loads."""
    code = (f"import json, sys, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('runa'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", ["runa.config", "runa.registry", "runa.components",
                                    "runa.protocol.ranges",
                                    "runa.protocol.names", "runa.paths", "runa.preflight",
                                    "runa.protocol.params", "runa.protocol.payloads",
                                    "runa.protocol.splinfer", "runa.protocol.tieto",
                                    "runa.protocol.answer", "runa.protocol.faults",
                                    "runa.protocol.heartbeat", "runa.protocol.doc"])
def test_a_shared_layer_imports_no_component(module: str) -> None:
    components = [m for m in loaded_by(module) if m.startswith(COMPONENTS)]
    assert components == [], f"{module} loads {components}"


def test_the_splinter_library_is_the_lowest_layer() -> None:
    """It uses only the exception base; paths and config build on it, not it on them."""
    above = [m for m in loaded_by("runa.splinter")
             if not m.startswith(("runa.splinter", "runa.errors")) and m != "runa"]
    assert above == []


@pytest.mark.parametrize("module", ["runa.config", "runa.paths", "runa.splinfer.daemon",
                                    "runa.tieto.daemon", "runa.keeper.daemon",
                                    "runa.gilgul.daemon"])
def test_each_module_imports_first_without_a_cycle(module: str) -> None:
    assert module in loaded_by(module)


@pytest.mark.parametrize("module", ["runa.chat.params", "runa.chat.session", "runa.chat.rag",
                                    "runa.chat.repl", "runa.chat.conversations"])
def test_the_chat_meets_splinfer_and_tieto_only_through_the_protocol(module: str) -> None:
    """The sampling parameters and the answer's shapes are the wire contract's, not theirs."""
    others = [m for m in loaded_by(module) if m.startswith(("runa.splinfer", "runa.tieto"))]
    assert others == [], f"{module} loads {others}"
