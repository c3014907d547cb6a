"""Keep the per-component packages in step with the component registry.

Each component in ``runa/data/components.toml`` gets a binary package of its own
(``runa-<name>``: its user unit) in ``debian/control`` and in ``packaging/fedora/runa.spec``,
and the ``runa`` metapackage depends on all of them. The blocks between the ``BEGIN
components`` and ``END components`` markers are written from the registry, so a new
component (tieto, …) gets its package by running this once; ``--check`` (the tests, and
``make deb``/``make rpm``) fails while they are out of step.

Usage: python3 packaging/components.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "runa/data/components.toml"
CONTROL = ROOT / "debian/control"
SPEC = ROOT / "packaging/fedora/runa.spec"


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?ms)^(# BEGIN {name}\b[^\n]*\n)(.*?)(^# END {name}\b)")


@dataclass(frozen=True)
class Component:
    name: str
    description: str
    listens: bool = False  # it has a .socket unit (``listen`` in its registry entry)

    @property
    def short(self) -> str:
        """The registry's description up to its colon, as a package synopsis."""
        return self.description.removeprefix("Runa ").split(":")[0].rstrip(".")


def components(registry: Path = REGISTRY) -> list[Component]:
    """The registry's components, in its start order."""
    data = tomllib.loads(registry.read_text())
    return [Component(name, table["description"], bool(table.get("listen")))
            for name, table in data.get("components", {}).items()]


def control_block(comps: list[Component]) -> str:
    deps = ", ".join(["runa-common (= ${source:Version})"]
                     + [f"runa-{c.name} (= ${{source:Version}})" for c in comps]
                     + ["runa-model-default (= ${source:Version})", "${misc:Depends}"])
    out = ["", "Package: runa", "Architecture: all", f"Depends: {deps}",
           "Description: local, offline LLM runtime of small cooperating processes",
           " Runa runs a language model on this machine as small processes that meet on",
           " a shared-memory bus, each replaceable and restartable, under a systemd user",
           " manager. Nothing leaves the machine.",
           " .",
           " This metapackage installs every component and the default models; start it",
           " with \"systemctl --user start runa.target\" and talk to it with \"runa chat\".",
           ""]
    for c in comps:
        out += [f"Package: runa-{c.name}", "Architecture: all",
                "Depends: runa-common (= ${source:Version}), ${misc:Depends}",
                f"Description: Runa component: {c.short}",
                f" The systemd user unit runa-{c.name}.service, which runa.target starts",
                f" (\"runa daemon {c.name}\"). The code is in runa-common.", ""]
    return "\n".join(out)


def spec_requires(comps: list[Component]) -> str:
    """The main (meta)package's Requires on every component package."""
    return "\n".join(f"Requires: runa-{c.name} = %{{version}}-%{{release}}" for c in comps)


def spec_block(comps: list[Component]) -> str:
    out = []
    for c in comps:
        out += [f"%package -n runa-{c.name}", f"Summary: Runa {c.short}", "BuildArch: noarch",
                "Requires: runa-common = %{version}-%{release}", "",
                f"%description -n runa-{c.name}",
                f"The systemd user unit runa-{c.name}.service, started by runa.target.", "",
                f"%files -n runa-{c.name}", f"%{{_userunitdir}}/runa-{c.name}.service",
                *([f"%{{_userunitdir}}/runa-{c.name}.socket"] if c.listens else []), ""]
    return "\n".join(out)


def sync(path: Path, blocks: dict[str, str], check: bool) -> bool:
    """Rewrite ``path``'s generated blocks; True when they were already in step."""
    text = new = path.read_text()
    for name, block in blocks.items():
        match = _block(name).search(new)
        if match is None:
            raise SystemExit(f"{path}: no '# BEGIN {name}' … '# END {name}' block")
        new = new[:match.start(2)] + block + "\n" + new[match.end(2):]
    if new == text:
        return True
    if not check:
        path.write_text(new)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail (exit 1) if a block differs from the registry; write nothing")
    args = parser.parse_args(argv)
    comps = components()
    stale = [str(p.relative_to(ROOT)) for p, block in
             ((CONTROL, {"components": control_block(comps)}),
              (SPEC, {"component-requires": spec_requires(comps),
                      "components": spec_block(comps)}))
             if not sync(p, block, args.check)]
    if stale and args.check:
        print(f"out of step with {REGISTRY.relative_to(ROOT)}: {', '.join(stale)}; "
              "run python3 packaging/components.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
