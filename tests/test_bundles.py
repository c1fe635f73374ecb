"""Release bundles: `chargepoint release build` from this checkout, what the manifest holds,
and every way a bundle can be unfit (tampered, truncated, incomplete, for another
platform or Python, no room to install it), each refused with its reason before anything
that runs is touched.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint import releases
from tests.test_packaging import read_lock

ROOT = Path(__file__).resolve().parents[1]
OTHER = f"{__version__}.1"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`chargepoint release build --out DIR` run as a person runs it: (bundle, output)."""
    out = tmp_path_factory.mktemp("out")
    result = subprocess.run([sys.executable, "-m", "chargepoint", "release", "build", "--out",
                             str(out)], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path_factory.getbasetemp())
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.splitlines()[-1]), result.stdout


@pytest.fixture(scope="module")
def other(bundle_shelf):
    """The bundle of this checkout as another version, to install."""
    return bundle_shelf.get(OTHER)


def rewrite(bundle: Path, dest: Path, drop: str = "", add: tuple[str, bytes] = (),
            manifest_edit=None) -> Path:
    """A copy of `bundle` without member `drop` (and out of its manifest), with member
    `add`, or with its manifest edited: a bundle consistent in itself."""
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(members[0][1])
    if drop:
        del manifest["files"][drop]
    if manifest_edit:
        manifest_edit(manifest)
    with tarfile.open(dest, "w") as tar:
        for member, data in members:
            if member.name == drop:
                continue
            if member.name == releases.MANIFEST:
                data = json.dumps(manifest).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        if add:
            info = tarfile.TarInfo(add[0])
            info.size = len(add[1])
            tar.addfile(info, io.BytesIO(add[1]))
    return dest


def test_build_prints_the_bundle_last_and_its_manifest_lists_every_file(built):
    bundle, output = built
    assert bundle.name == f"chargepoint-{__version__}-py{sys.version_info[0]}." \
        f"{sys.version_info[1]}-{releases.machine_platform()}.tar"
    assert bundle.exists() and output.splitlines()[-1] == str(bundle)
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(releases.MANIFEST).read())
    assert names[0] == releases.MANIFEST and sorted(names[1:]) == sorted(manifest["files"])
    assert manifest["version"] == __version__
    assert manifest["platform"] == releases.machine_platform()
    assert manifest["wheel"] == f"chargepoint-{__version__}-py3-none-any.whl"
    assert manifest["installer"].startswith("pip-")
    wheels = {re.split(r"-\d", name)[0].lower().replace("_", "-") for name in names[1:]}
    assert set(read_lock("runtime")) <= wheels               # every pinned dependency
    shown = releases.verify_bundle(bundle)
    assert shown.version == __version__ and shown.size == sum(
        f["size"] for f in manifest["files"].values())


def test_a_bundle_is_built_the_same_twice(built, tmp_path):
    """No builder's name, owner or clock in it: the same tree gives the same files."""
    bundle, _ = built
    again = releases.build_bundle(tmp_path)
    with tarfile.open(bundle) as a, tarfile.open(again) as b:
        first = {m.name: (m.mode, m.uid, m.uname, m.mtime) for m in a.getmembers()}
        second = {m.name: (m.mode, m.uid, m.uname, m.mtime) for m in b.getmembers()}
    assert first == second
    assert {(m, 0o644, 0, "", 0) for m in first} == {(m, *v) for m, v in first.items()}


def test_a_tampered_file_is_named(built, tmp_path):
    bundle, _ = built
    copy = tmp_path / bundle.name
    shutil.copy(bundle, copy)
    with tarfile.open(copy) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith("websocket_client"))
    with open(copy, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(releases.ReleaseError, match=rf"{member.name} does not match its "
                                                     "SHA-256 in the manifest"):
        releases.verify_bundle(copy)


def test_a_truncated_bundle_is_refused(built, tmp_path):
    bundle, _ = built
    data = bundle.read_bytes()
    with tarfile.open(bundle) as tar:
        last = tar.getmembers()[-1]
    # Halfway, in the last file (the padding after it holds nothing), in the manifest.
    for cut in (len(data) // 2, last.offset_data + last.size - 10, 700):
        copy = tmp_path / f"cut-{cut}.tar"
        copy.write_bytes(data[:cut])
        with pytest.raises(releases.ReleaseError, match="truncated"):
            releases.verify_bundle(copy)


def test_a_missing_or_an_extra_file_is_refused(built, tmp_path):
    bundle, _ = built
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile(releases.MANIFEST).read())
    wheel = next(n for n in manifest["files"] if n.startswith("ocpp-"))
    lacking = tmp_path / "lacking.tar"                  # the manifest still names it
    with tarfile.open(bundle) as tar:
        members = [m for m in tar.getmembers() if m.name != wheel]
        with tarfile.open(lacking, "w") as out:
            for member in members:
                out.addfile(member, tar.extractfile(member))
    with pytest.raises(releases.ReleaseError, match=f"truncated: 1 file.*{wheel}"):
        releases.verify_bundle(lacking)
    extra = rewrite(bundle, tmp_path / "extra.tar", add=("evil.whl", b"x"))
    with pytest.raises(releases.ReleaseError, match="'evil.whl' is not in its manifest"):
        releases.verify_bundle(extra)


@pytest.mark.parametrize("name", ["../../etc/cron.d/x.whl", ".hidden.whl", "script.sh"])
def test_a_manifest_naming_a_path_is_refused(built, tmp_path, name):
    bundle, _ = built

    def edit(manifest):
        manifest["files"][name] = {"sha256": "0" * 64, "size": 1}

    with pytest.raises(releases.ReleaseError, match="its manifest is not valid"):
        releases.verify_bundle(rewrite(bundle, tmp_path / "named.tar", manifest_edit=edit))


def test_something_else_is_not_a_bundle(tmp_path):
    junk = tmp_path / "firmware.bin"
    junk.write_bytes(os.urandom(20000))
    with pytest.raises(releases.ReleaseError, match="truncated or not a release bundle"):
        releases.verify_bundle(junk)
    tar = tmp_path / "other.tar"
    with tarfile.open(tar, "w") as out:
        out.add(__file__, arcname="README")
    with pytest.raises(releases.ReleaseError, match="not a release bundle"):
        releases.verify_bundle(tar)


def test_a_bundle_for_another_platform_is_refused(tmp_path):
    other = "linux_aarch64" if releases.machine_platform() != "linux_aarch64" \
        else "linux_x86_64"
    bundle = releases.build_bundle(tmp_path, platform=other)
    manifest = releases.read_manifest(bundle)
    assert manifest.platform == other and manifest.python == releases.PI_PYTHON
    if other == "linux_aarch64":
        assert any(n.startswith("lgpio-") for n in manifest.files)   # the Pi's GPIO
    with pytest.raises(releases.ReleaseError, match=f"built for {other}, this machine is "
                                                     f"{releases.machine_platform()}"):
        releases.verify_bundle(bundle)


def test_a_bundle_for_another_python_is_refused(tmp_path):
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    theirs = "3.12" if mine != "3.12" else "3.11"
    bundle = releases.build_bundle(tmp_path, python=theirs)
    assert releases.read_manifest(bundle).python == theirs
    with pytest.raises(releases.ReleaseError, match=f"built for Python {theirs}, this "
                                                     f"machine runs {mine}"):
        releases.verify_bundle(bundle)


def test_an_unknown_platform_is_refused_before_anything_is_built(tmp_path, capsys):
    from chargepoint.cli import main

    assert main(["release", "build", "--platform", "win_amd64", "--out", str(tmp_path)]) == 1
    assert "platform 'win_amd64': one of linux_aarch64" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ installing

def test_install_makes_a_release_that_runs_offline(other, tmp_path):
    state = tmp_path / "state"
    env_before = dict(os.environ)
    assert releases.install_bundle(other, state) == OTHER
    assert os.environ == env_before
    path = state / "releases" / OTHER
    assert guard.is_complete(state, OTHER) and guard.installed(state) == [OTHER]
    result = subprocess.run([str(path / "bin" / "chargepoint"), "--version"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == f"chargepoint {OTHER}"
    info = json.loads((path / guard.RELEASE_INFO).read_text())
    assert info["version"] == OTHER and info["files"]
    assert not (path / ".bundle").exists() and not (path / guard.INCOMPLETE).exists()
    assert not (path / "bin" / "pip").exists()                 # pip ran from its wheel only
    # Installing it again replaces it (an earlier, failed or rolled back copy).
    assert releases.install_bundle(other, state) == OTHER


def test_an_incomplete_bundle_fails_to_install_and_leaves_nothing(other, tmp_path):
    state = tmp_path / "state"
    with tarfile.open(other) as tar:
        manifest = json.loads(tar.extractfile(releases.MANIFEST).read())
    missing = next(n for n in manifest["files"] if n.startswith("websocket_client"))
    bundle = rewrite(other, tmp_path / "incomplete.tar", drop=missing)
    releases.verify_bundle(bundle)                         # consistent in itself
    with pytest.raises(releases.ReleaseError, match="pip check failed.*websocket-client"):
        releases.install_bundle(bundle, state)
    assert os.listdir(state / "releases") == []


def test_the_running_release_is_not_installed_over(built, tmp_path):
    bundle, _ = built
    with pytest.raises(releases.ReleaseError, match=f"release {__version__} is the one "
                                                     "running"):
        releases.install_bundle(bundle, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a small filesystem of its own needs root (a mount namespace)")
def test_a_disk_without_room_is_refused_up_front(other, tmp_path):
    """On an 8 MB filesystem (a tmpfs in a private mount namespace) the install is refused
    before it writes anything, and says how much it needs."""
    state = tmp_path / "small"
    state.mkdir()
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from chargepoint import releases\n"
              "try:\n"
              f"    releases.install_bundle({str(other)!r}, {str(state)!r})\n"
              "except releases.ReleaseError as exc:\n"
              "    print(exc)\n"
              "import os\n"
              f"print(sorted(os.listdir({str(state / 'releases')!r})))\n")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size=8m tmpfs {state} && {sys.executable} -c \"$0\"", script],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"not enough room in {state}/releases to install release {OTHER}: "
                     r"\d+ MB free, about \d+ MB needed", result.stdout), result.stdout
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a network namespace of its own needs root")
def test_install_needs_no_network(other, tmp_path):
    """In a network namespace with no interface up (not even loopback) the install works."""
    state = tmp_path / "state"
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from chargepoint import releases\n"
              f"print(releases.install_bundle({str(other)!r}, {str(state)!r}))\n")
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == OTHER
    assert guard.is_complete(state, OTHER)
