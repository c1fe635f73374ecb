"""What a release is made of: the license, the declared dependencies and their lock
files, the files shipped inside the package (`chargepoint install-files`), the wheel.

The wheel is built here as `python3 dev.py release` builds it; installing it and
following the install guide is tests/test_install_guide.py.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from chargepoint import __version__
from chargepoint.cli import main
from chargepoint.install_files import SHIPPED, shipped_bytes

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

#: sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the official text.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

#: Where each shipped file lives in the repository, the copy the docs name and
#: people edit; chargepoint/data/ holds the same bytes for wheel installs.
REPOSITORY_PATHS = {
    "config.toml": "config.toml",
    "chargepoint.service": "systemd/chargepoint.service",
    "chargepoint.sysusers.conf": "systemd/chargepoint.sysusers.conf",
    "50-chargepoint-reboot.rules": "systemd/50-chargepoint-reboot.rules",
    "70-chargepoint-devices.rules": "systemd/70-chargepoint-devices.rules",
    "chargepoint.journald.conf": "systemd/chargepoint.journald.conf",
    "release-guard.py": "chargepoint/release_guard.py",
}

#: The controller: Raspberry Pi OS Bookworm, 64-bit, CPython 3.11.
PI = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
      "platform_system": "Linux", "platform_machine": "aarch64", "os_name": "posix",
      "implementation_name": "cpython", "platform_python_implementation": "CPython",
      "extra": ""}


def load_dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return dev


# --------------------------------------------------------------------------- metadata

def test_license_file_is_the_official_apache_2_0_text():
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    # The SPDX form (PEP 639): the table form is deprecated by setuptools >= 77.
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not [c for c in PROJECT.get("classifiers", []) if c.startswith("License ::")]
    requires = PYPROJECT["build-system"]["requires"]
    assert [r for r in requires if Requirement(r).name == "setuptools"] == ["setuptools>=77"]


def test_every_declared_package_data_file_exists():
    """A pattern matching nothing (a declared py.typed that is not there) ships nothing."""
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        directory = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            assert list(directory.glob(pattern)), f"{package}: {pattern} matches no file"


def _third_party_imports(directory: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under `directory` (lazy imports too)."""
    found: dict[str, set[str]] = {}
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                        "chargepoint", "hal", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_every_imported_library_is_a_declared_dependency():
    """A library the code imports is a dependency of its own, not one that another
    dependency happens to bring (jsonschema came through ocpp)."""
    base = _declared(PROJECT["dependencies"])
    extras = {name: _declared(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    distributions = packages_distributions()
    undeclared = []
    for directory in (ROOT / "chargepoint", ROOT / "hal"):
        for module, files in _third_party_imports(directory).items():
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            # The bundled Central System may use the [csms] extra, and the pin factory of
            # any board's GPIO chip ([gpio] pin_factory = "lgpio-chip") the [pi] extra's
            # lgpio, loaded only when configured; nothing else may.
            allowed = base | (extras["csms"] if all(f.startswith("chargepoint/csms/")
                                                    for f in files) else set())
            if all(f == "hal/gpio_chip.py" for f in files):
                allowed |= extras["pi"]
            if not names & allowed:
                undeclared.append((module, sorted(files)))
    assert undeclared == []


# --------------------------------------------------------------------------- lock files

def read_lock(name: str) -> dict[str, tuple[str, str, list[str]]]:
    """requirements/NAME.txt as {name: (version, marker, hashes)}."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text()
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        line = block.split("\\\n")[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)(?:\s*;\s*(.+?))?\s*\\?", line)
        assert match, f"requirements/{name}.txt: not an exact pin: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        entries[canonicalize_name(match[1])] = (match[2], match[3] or "", hashes)
    return entries


def _needed_on_the_pi(requirement: Requirement, extra: str = "") -> bool:
    return requirement.marker is None or requirement.marker.evaluate({**PI, "extra": extra})


@pytest.mark.parametrize("lock, extras", [("runtime", []), ("pi", ["pi"])])
def test_lock_file_pins_every_dependency_of_pyproject(lock, extras):
    entries = read_lock(lock)
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    wanted += [Requirement(r) for e in extras for r in PROJECT["optional-dependencies"][e]]
    for requirement in wanted:
        if not _needed_on_the_pi(requirement, *extras[:1]):
            continue
        name = canonicalize_name(requirement.name)
        assert name in entries, f"requirements/{lock}.txt lacks {requirement}"
        version, marker, _ = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"requirements/{lock}.txt pins {name}=={version}, pyproject wants {requirement}"
        assert not marker or Marker(marker).evaluate(PI), f"{name} left out on the Pi"
    for name, (version, _, hashes) in entries.items():
        assert hashes, f"requirements/{lock}.txt: {name}=={version} has no --hash"


def test_pi_lock_is_the_runtime_lock_and_the_pi_extra():
    runtime, pi = read_lock("runtime"), read_lock("pi")
    extra = {canonicalize_name(Requirement(r).name)
             for r in PROJECT["optional-dependencies"]["pi"]}
    assert {n: v[0] for n, v in pi.items() if n not in extra} == \
        {n: v[0] for n, v in runtime.items()}
    assert extra <= set(pi)


def test_lock_files_say_how_they_are_made():
    for name in ("runtime", "pi"):
        head = (ROOT / "requirements" / f"{name}.txt").read_text().splitlines()[:2]
        assert head[1].strip("# ") == "python3 dev.py lock", head


# --------------------------------------------------------------------------- shipped files

def test_shipped_files_are_the_repository_files():
    data = ROOT / "chargepoint" / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(item.name for item in SHIPPED
                                                             if not item.source)
    assert set(REPOSITORY_PATHS) == {item.name for item in SHIPPED}
    for name, source in REPOSITORY_PATHS.items():
        assert shipped_bytes(name) == (ROOT / source).read_bytes(), (
            f"chargepoint/data/{name} differs from {source}, the copy that is edited: "
            f"cp {source} chargepoint/data/{name}")


def _install_files(capsys, *args) -> tuple[int, str, str]:
    code = main(["install-files", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_install_files_writes_every_shipped_file(tmp_path, capsys):
    dest = tmp_path / "files"
    code, out, err = _install_files(capsys, dest)
    assert (code, err) == (0, "")
    for item in SHIPPED:
        path = dest / item.name
        assert path.read_bytes() == shipped_bytes(item.name)
        assert path.stat().st_mode & 0o777 == 0o644
        assert f"written   {path}  (goes to {item.target})" in out.splitlines()
    assert sorted(os.listdir(dest)) == sorted(item.name for item in SHIPPED)

    code, out, err = _install_files(capsys, dest)          # again: nothing to do
    assert (code, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()] == ["unchanged"] * len(SHIPPED)


def test_install_files_keeps_an_edited_copy_and_writes_nothing(tmp_path, capsys):
    dest = tmp_path / "files"
    dest.mkdir()
    edited = dest / "config.toml"
    edited.write_text("# my settings\n")
    code, out, err = _install_files(capsys, dest)
    assert code == 1 and out == ""
    assert f"{edited}" in err and "--force" in err and "nothing written" in err
    assert os.listdir(dest) == ["config.toml"]
    assert edited.read_text() == "# my settings\n"

    code, out, err = _install_files(capsys, dest, "--force")
    assert (code, err) == (0, "")
    assert f"replaced  {edited}  (goes to /etc/chargepoint/config.toml)" in out
    assert edited.read_bytes() == shipped_bytes("config.toml")


def test_install_files_into_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "not-a-directory"
    target.write_text("kept")
    code, out, err = _install_files(capsys, target)
    assert code == 1 and "is not a directory" in err
    assert target.read_text() == "kept"


def test_demo_without_the_csms_extra_says_what_to_install(tmp_path):
    """Where websockets is not installed, `chargepoint demo` says so instead of a
    traceback (the fresh install in test_install_guide.py shows it for real)."""
    script = ("import sys; sys.modules['websockets'] = None\n"
              "from chargepoint.cli import main\n"
              "sys.exit(main(['demo']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "[csms] extra" in result.stderr
    assert f"{sys.executable} -m pip install 'websockets>=13'" in result.stderr


# --------------------------------------------------------------------------- the wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    log = load_dev().build_wheel(ROOT, out)
    (path,) = out.glob("*.whl")
    return path, log


def test_wheel_build_gives_no_warning(wheel):
    _, log = wheel
    warnings = [line for line in log.splitlines()
                if re.search(r"warn|deprecat", line, re.I)
                # Only says PYTHONDONTWRITEBYTECODE is set in this environment.
                and "byte-compiling is disabled" not in line]
    assert warnings == []


def test_wheel_holds_the_license_the_data_and_the_dependencies(wheel):
    path, _ = wheel
    assert path.name == f"chargepoint-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        info = f"chargepoint-{__version__}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        for item in SHIPPED:
            inside = item.source or f"data/{item.name}"
            assert archive.read(f"chargepoint/{inside}") == shipped_bytes(item.name)
        assert archive.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "chargepoint/py.typed" not in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    requires = {canonicalize_name(Requirement(r).name): Requirement(r)
                for r in metadata.get_all("Requires-Dist")}
    assert str(requires["jsonschema"].specifier) == "<5,>=4.18"
