"""The core's dependency directions, read from the imports (docs/architecture.md).

    runtime (adapters) -> station -> handlers -> protocol -> model -> leaves
                                   \\_____________________________/^

Every import of every module is read with `ast`, those under `if TYPE_CHECKING:` too, and
checked against the layer it may reach. `hal` never imports `chargepoint`. An import
inside a function body is allowed only with its reason on the same line (a lazily loaded
optional backend, a command-line tool's start-up): hidden imports hide the real fan-out.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules of the leaf layer: no charging logic, importing nothing above them.
LEAVES = {"chargepoint", "chargepoint.store", "chargepoint.actions", "chargepoint.events",
          "chargepoint.timers", "chargepoint.clock", "chargepoint.ocpp_keys"}
#: What the model may see of the hardware: its vocabulary, never a backend.
HAL_VOCABULARY = {"hal", "hal.events", "hal.interfaces"}

#: layer -> the layers it may import (itself included).
MAY_IMPORT = {
    "runtime": {"runtime", "station", "handlers", "protocol", "model", "leaf", "hal",
                "hal-vocabulary"},
    "station": {"station", "handlers", "protocol", "model", "leaf", "hal-vocabulary"},
    "handlers": {"handlers", "protocol", "model", "leaf"},
    "protocol": {"protocol", "model", "leaf"},
    "model": {"model", "leaf", "hal-vocabulary"},
    "leaf": {"leaf"},
    "hal": {"hal", "hal-vocabulary"},
    "hal-vocabulary": {"hal-vocabulary"},
}


def layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    if module in HAL_VOCABULARY:
        return "hal-vocabulary"
    if module == "hal" or module.startswith("hal."):
        return "hal"
    for name in ("station", "handlers", "protocol", "model"):
        if module == f"chargepoint.{name}" or module.startswith(f"chargepoint.{name}."):
            return name
    return "runtime"      # cli, runtime, transport, storage, config, the bundled CSMS, ...


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # `from pkg import name` may name a submodule: count the submodule when it is one.
    return [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]


def imports(root: Path, path: Path) -> list[tuple[int, str, bool, str]]:
    """(line, imported module, inside a function body, the line's text) of every import."""
    module = module_name(root, path)
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(sub) for sub in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, path, node)
        else:
            continue
        for name in names:
            found.append((node.lineno, name, id(node) in in_function, lines[node.lineno - 1]))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks the rules, as "file:line: why"."""
    ours = {module_name(root, p) for top in ("chargepoint", "hal")
            for p in (root / top).rglob("*.py")}
    problems = []
    for top in ("chargepoint", "hal"):
        for path in sorted((root / top).rglob("*.py")):
            source = module_name(root, path)
            where = f"{path.relative_to(root)}"
            lazy_lines = set()
            for line, target, lazy, text in imports(root, path):
                if lazy and "#" not in text and line not in lazy_lines:
                    lazy_lines.add(line)
                    problems.append(f"{where}:{line}: import of {target} inside a function "
                                    "without its reason on the line")
                if target not in ours:
                    continue                        # stdlib, third party, or a name
                if top == "hal" and target.startswith("chargepoint"):
                    problems.append(f"{where}:{line}: hal imports {target}")
                    continue
                allowed = MAY_IMPORT[layer(source)]
                if layer(target) not in allowed:
                    problems.append(f"{where}:{line}: {layer(source)} ({source}) imports "
                                    f"{layer(target)} ({target})")
    return problems


def test_the_core_imports_only_downwards():
    assert violations(ROOT) == []


def test_the_model_has_no_import_cycle():
    """Model services are wired in one order (chargepoint/model/services.py): no module of
    the model imports one that imports it back."""
    root = ROOT
    model = {module_name(root, p): p for p in (root / "chargepoint" / "model").rglob("*.py")}
    graph = {name: {t for _, t, _, _ in imports(root, path) if t in model and t != name}
             for name, path in model.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, body in {"chargepoint/__init__.py": "", "chargepoint/model/__init__.py": "",
                       "chargepoint/handlers/__init__.py": "", "hal/__init__.py": "",
                       **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"chargepoint/station.py": "",
      "chargepoint/model/sessions.py": "from chargepoint.station import Station\n"},
     "model (chargepoint.model.sessions) imports station"),
    ({"chargepoint/model/sessions.py": "from typing import TYPE_CHECKING\n"
                                        "if TYPE_CHECKING:\n"
                                        "    from chargepoint.handlers import remote\n",
      "chargepoint/handlers/remote.py": ""},
     "model (chargepoint.model.sessions) imports handlers"),
    ({"chargepoint/model/boot.py": "from ..protocol import rpc\n",
      "chargepoint/protocol/__init__.py": "", "chargepoint/protocol/rpc.py": ""},
     "model (chargepoint.model.boot) imports protocol"),
    ({"hal/gpio.py": "import chargepoint.store\n", "chargepoint/store.py": ""},
     "hal imports chargepoint.store"),
    ({"chargepoint/model/metering.py": "def f():\n    import json\n"},
     "import of json inside a function without its reason"),
    ({"chargepoint/store.py": "from chargepoint.model import sessions\n",
      "chargepoint/model/sessions.py": ""},
     "leaf (chargepoint.store) imports model"),
])
def test_a_deliberate_violation_is_caught(tmp_path, files, expected):
    found = violations(_tree(tmp_path, files))
    assert any(expected in problem for problem in found), found


def test_a_lazy_import_with_its_reason_and_downward_imports_pass(tmp_path):
    root = _tree(tmp_path, {
        "chargepoint/store.py": "",
        "chargepoint/model/sessions.py": "from chargepoint.store import Store\n",
        "chargepoint/handlers/remote.py": "from chargepoint.model import sessions\n",
        "hal/pilot.py": "def f():\n    import gpiozero  # optional backend, Pi only\n"})
    assert violations(root) == []
