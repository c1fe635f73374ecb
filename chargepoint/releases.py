"""Release bundles, and the switch from one release to the next (docs/firmware-update.md).

A **bundle** is one tar file: the project's wheel, the wheel of every runtime dependency
for one platform and Python (downloaded by pip from the hash-locked requirements/*.txt,
`--only-binary`, so a Raspberry Pi's bundle can be built on an x86 desktop), pip's own
wheel to install them with, and `manifest.json`: version, Python, platform, the newest
glibc its wheels need, and the SHA-256 and size of every file. It installs with no
network, into a virtual environment of its own under `<state dir>/releases/<version>/`.

The firmware's update calls, from a worker thread (never the station's loop):
`verify_bundle`, `install_bundle`, `start_trial`, then a restart (`Launch.command`), and
on the next boot `trial`, then `commit` or `rollback`. Which release runs and the trial
itself are kept by `chargepoint.release_guard`, which also runs outside every release.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform as platform_module
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import venv
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint.model import firmware_signing as signing
from chargepoint.model.certificates import CertificateProblem, load_chain

log = logging.getLogger("chargepoint.releases")

MANIFEST = "manifest.json"
#: The manifest's format; a firmware installs bundles up to its own.
BUNDLE_FORMAT = 1
#: Raspberry Pi OS Bookworm: the default target of a bundle built for another machine.
PI_PYTHON = "3.11"
PI_GLIBC = "2.36"
#: pip runs out of its wheel (pip's documented bootstrap); installing it takes this long
#: at most on a slow card.
INSTALL_TIMEOUT_S = 900.0
#: Room an install needs, as a multiple of the wheels' size (unpacked, compiled, and the
#: unpacked wheels themselves meanwhile).
ROOM_FACTOR = 5


class ReleaseError(Exception):
    """A bundle that cannot be used, or a release step that failed; says why. Whatever
    raised it left the running release and `current` as they were."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    python: str                # "3.11": the wheels are for this Python only
    platform: str              # "linux_aarch64"
    glibc: str                 # the newest glibc a wheel needs, "" if none does
    system_site_packages: bool  # lgpio from the system (32-bit Raspberry Pi OS)
    wheel: str                 # the project's own wheel
    installer: str             # pip's wheel
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    built: str = ""

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


# ------------------------------------------------------------------------------ platforms

def machine_platform() -> str:
    """This machine's platform tag as bundles name it: `linux_<machine>` of the running
    Python (a 32-bit userland on a 64-bit Pi kernel says aarch64 but needs armv7l)."""
    machine = platform_module.machine()
    if machine in ("aarch64", "arm64") and sys.maxsize < 2 ** 32:
        machine = "armv7l"
    return f"{sys.platform}_{machine}"


def machine_glibc() -> str:
    lib, version = platform_module.libc_ver()
    return version if lib == "glibc" else ""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


@dataclass(frozen=True)
class Target:
    """What a bundle is built for."""

    platform: str
    python: str
    glibc: str

    @classmethod
    def choose(cls, platform: Optional[str] = None, python: Optional[str] = None) -> "Target":
        here = machine_platform()
        platform = platform or here
        if not re.fullmatch(r"linux_(aarch64|armv7l|x86_64)", platform):
            raise ReleaseError(f"platform {platform!r}: one of linux_aarch64, linux_armv7l "
                               "(Raspberry Pi OS 64-bit, 32-bit), linux_x86_64")
        if python is not None and not re.fullmatch(r"3\.\d+", python):
            raise ReleaseError(f"python {python!r}: a version such as 3.11")
        if platform == here:
            mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
            return cls(platform, python or mine, machine_glibc() or PI_GLIBC)
        return cls(platform, python or PI_PYTHON, PI_GLIBC)

    @property
    def machine(self) -> str:
        return self.platform.split("_", 1)[1]

    @property
    def lock(self) -> str:
        """requirements/<lock>.txt: a 64-bit Pi gets lgpio from PyPI, 32-bit Raspberry Pi
        OS from apt (system_site_packages), another machine has no GPIO of the Pi."""
        return "pi" if self.machine == "aarch64" else "runtime"

    def pip_platforms(self) -> list[str]:
        """pip --platform takes exact tags: every manylinux the target's glibc runs."""
        m = self.machine
        top = _version_tuple(self.glibc)[1] if self.glibc else 17
        tags = [f"manylinux_2_{minor}_{m}" for minor in range(top, 4, -1)]
        tags += [f"manylinux2014_{m}"]
        if m == "x86_64":
            tags += [f"manylinux2010_{m}", f"manylinux1_{m}"]
        return tags + [self.platform]


def _wheel_glibc(name: str) -> tuple[int, ...]:
    """The oldest glibc a wheel runs on, from its platform tags; () if it needs none."""
    tags = name[:-len(".whl")].split("-")[-1].split(".")
    needs = []
    for tag in tags:
        match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
        legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
        if match:
            needs.append((int(match[1]), int(match[2])))
        elif tag.split("_")[0] in legacy:
            needs.append(legacy[tag.split("_")[0]])
        elif tag == "any" or not tag.startswith(("manylinux", "musllinux", "linux")):
            return ()
        else:
            needs.append((0,))
    return min(needs) if needs else ()


# ------------------------------------------------------------------------------ building

def _checkout_of(module_file: str) -> Path:
    root = Path(module_file).resolve().parents[1]
    if not (root / "pyproject.toml").exists() or not (root / "dev.py").exists():
        raise ReleaseError(f"{root} is not a checkout of the firmware (no pyproject.toml "
                           "and dev.py): a bundle is built from a checkout")
    return root


def _dev_module(root: Path):
    """dev.py of the checkout: the wheel is built exactly as `python3 dev.py release`
    builds it (from a clean copy of the tree)."""
    spec = importlib.util.spec_from_file_location("chargepoint_dev", root / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pip(args: list[str], what: str, timeout: float = INSTALL_TIMEOUT_S) -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        lines = [line for line in (result.stderr or result.stdout).splitlines()
                 if line.startswith("ERROR") or "No matching" in line] \
            or (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ReleaseError(f"{what} failed: " + " / ".join(lines))
    return result.stdout


def build_bundle(out_dir: str | os.PathLike, platform: Optional[str] = None,
                 python: Optional[str] = None, source: Optional[Path] = None,
                 progress: Callable[[str], None] = lambda line: None) -> Path:
    """Build `<out_dir>/chargepoint-<version>-py<python>-<platform>.tar` from the checkout
    (`source`, else the one this module lies in); returns its path."""
    root = Path(source) if source is not None else _checkout_of(__file__)
    target = Target.choose(platform, python)
    lock = root / "requirements" / f"{target.lock}.txt"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chargepoint-bundle-") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        progress(f"building the wheel of {root}")
        _dev_module(root).build_wheel(root, files)
        (own,) = files.glob("chargepoint-*.whl")
        version = own.name.split("-")[1]
        abi = "cp" + target.python.replace(".", "")
        progress(f"downloading the dependencies for {target.platform}, Python "
                 f"{target.python} (requirements/{lock.name})")
        platforms = [arg for tag in target.pip_platforms() for arg in ("--platform", tag)]
        common = ["download", "--only-binary", ":all:", *platforms, "--python-version",
                  target.python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                  "--abi", "none", "--dest", str(files)]
        _pip([*common, "--require-hashes", "-r", str(lock)],
             f"downloading the wheels of requirements/{lock.name} for {target.platform}, "
             f"Python {target.python}")
        # The pip that builds a bundle is the pip that installs it.
        _pip([*common, "--no-deps", f"pip=={metadata.version('pip')}"],
             "downloading pip's wheel")
        installer = next(files.glob("pip-*.whl")).name
        wheels = sorted(p.name for p in files.glob("*.whl"))
        needs = max((_wheel_glibc(name) for name in wheels), default=())
        manifest = Manifest(
            name="chargepoint", version=version, python=target.python,
            platform=target.platform, glibc=".".join(map(str, needs)) if needs else "",
            system_site_packages=target.machine == "armv7l", wheel=own.name,
            installer=installer,
            files={name: {"sha256": _sha256(files / name), "size": (files / name).stat().st_size}
                   for name in wheels},
            built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (Path(tmp) / MANIFEST).write_text(json.dumps({"format": BUNDLE_FORMAT,
                                                      **asdict(manifest)}, indent=1) + "\n")
        bundle = out_dir / f"chargepoint-{version}-py{target.python}-{target.platform}.tar"
        partial = bundle.with_name(f".{bundle.name}.partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(Path(tmp) / MANIFEST, arcname=MANIFEST, filter=_plain)
            for name in wheels:
                tar.add(files / name, arcname=name, filter=_plain)
        os.replace(partial, bundle)
    progress(f"{len(wheels)} wheels, {manifest.size / 1e6:.1f} MB")
    return bundle


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """The same bytes whoever builds: no owner names, ids or times of the builder."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o644
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ checking

def read_manifest(bundle: str | os.PathLike) -> Manifest:
    """The manifest of a bundle after checking every file against it (hash and size,
    none missing, none more); ReleaseError naming what is wrong."""
    bundle = Path(bundle)
    try:
        with tarfile.open(bundle, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise ReleaseError(f"{bundle.name}: not a release bundle (it does not begin "
                                   f"with {MANIFEST})")
            manifest = _parse_manifest(tar.extractfile(first).read(), bundle.name)
            seen = set()
            for member in tar:
                if member.offset == first.offset:
                    continue                               # the manifest, read above
                expected = manifest.files.get(member.name)
                if expected is None or not member.isfile() or member.name in seen:
                    raise ReleaseError(f"{bundle.name}: {member.name!r} is not in its "
                                       "manifest")
                digest = hashlib.sha256()
                source = tar.extractfile(member)
                size = 0
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
                if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
                    raise ReleaseError(f"{bundle.name}: {member.name} does not match its "
                                       "SHA-256 in the manifest (damaged or altered)")
                seen.add(member.name)
    except (tarfile.TarError, EOFError) as exc:
        raise ReleaseError(f"{bundle.name}: truncated or not a release bundle ({exc})") \
            from None
    except OSError as exc:
        raise ReleaseError(f"{bundle.name}: cannot read it: {exc.strerror or exc}") from None
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise ReleaseError(f"{bundle.name}: truncated: {len(missing)} file(s) of its "
                           f"manifest missing, first {missing[0]}")
    return manifest


def _parse_manifest(raw: bytes, name: str) -> Manifest:
    try:
        data = json.loads(raw)
        if data.pop("format") > BUNDLE_FORMAT:
            raise ReleaseError(f"{name}: a bundle format newer than this firmware reads "
                               f"({BUNDLE_FORMAT})")
        manifest = Manifest(**data)
        guard.check_version(manifest.version)
        for entry in manifest.files.values():
            int(entry["size"]), str(entry["sha256"])
        if manifest.wheel not in manifest.files or manifest.installer not in manifest.files:
            raise ValueError("the wheel or pip is not among its files")
        if any("/" in n or n.startswith(".") or not n.endswith(".whl")
               for n in manifest.files):
            raise ValueError("a file name that is not a wheel's")
    except ReleaseError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, guard.GuardError) as exc:
        raise ReleaseError(f"{name}: its manifest is not valid ({exc})") from None
    return manifest


def verify_bundle(bundle: str | os.PathLike) -> Manifest:
    """Check a bundle whole (every file against its manifest) and that it is for this
    machine and this Python; its manifest, or ReleaseError(reason)."""
    manifest = read_manifest(bundle)
    here = machine_platform()
    if manifest.platform != here:
        raise ReleaseError(f"release {manifest.version} is built for {manifest.platform}, "
                           f"this machine is {here}")
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if manifest.python != mine:
        raise ReleaseError(f"release {manifest.version} is built for Python "
                           f"{manifest.python}, this machine runs {mine}")
    glibc = machine_glibc()
    if manifest.glibc and _version_tuple(glibc or "0") < _version_tuple(manifest.glibc):
        raise ReleaseError(f"release {manifest.version} needs glibc {manifest.glibc}, this "
                           f"machine has {glibc or 'none'}")
    return manifest


# ------------------------------------------------------------------------------ signatures

def bundle_digest(bundle: str | os.PathLike) -> bytes:
    """The SHA-256 of the whole bundle file: what its signature signs."""
    try:
        with open(bundle, "rb") as f:
            return signing.digest_of(iter(lambda: f.read(1 << 20), b""))
    except OSError as exc:
        raise ReleaseError(f"{Path(bundle).name}: cannot read it: "
                           f"{exc.strerror or exc}") from None


def sign_bundle(bundle: str | os.PathLike, private_key_pem: bytes,
                password: Optional[bytes] = None) -> str:
    """The manufacturer's side: the base64 signature of `bundle` with a code-signing key,
    what a CSMS sends as SignedUpdateFirmware's `signature`."""
    try:
        return signing.sign(private_key_pem, bundle_digest(bundle), password)
    except signing.SigningProblem as exc:
        raise ReleaseError(str(exc)) from None


def verify_bundle_signature(bundle: str | os.PathLike, signature: str, certificate_pem: str,
                            roots_pem: Optional[str] = None,
                            now_utc: Optional[float] = None) -> None:
    """Does `signature` (base64) sign `bundle` with the key of the signing certificate
    `certificate_pem`? With `roots_pem`, the certificate must also chain up to one of
    those roots, valid at `now_utc`. ReleaseError saying why not."""
    try:
        raw = signing.decode_signature(signature)
        if roots_pem is None:
            certificate = load_chain(certificate_pem)[0]
        else:
            certificate = signing.signing_certificate(certificate_pem, load_chain(roots_pem),
                                                      now_utc)
        signing.verify(certificate, raw, bundle_digest(bundle))
    except (signing.SigningProblem, CertificateProblem) as exc:
        raise ReleaseError(f"{Path(bundle).name}: {exc}") from None


# ------------------------------------------------------------------------------ installing

def install_bundle(bundle: str | os.PathLike, state_dir: str | os.PathLike) -> str:
    """Verify `bundle` and install it, offline, into `<state_dir>/releases/<version>/`;
    returns the version. Changes nothing that runs: on any failure its directory is
    removed and ReleaseError says why."""
    manifest = verify_bundle(bundle)
    version = manifest.version
    folder = guard.releases_dir(state_dir)
    if version == __version__ or version == guard.current_version(state_dir):
        raise ReleaseError(f"release {version} is the one running")
    on_trial = guard.read_trial(state_dir)
    if on_trial is not None:
        raise ReleaseError(f"release {on_trial.version} is on trial; another install waits "
                           "for its end")
    folder.mkdir(mode=0o750, parents=True, exist_ok=True)
    need = manifest.size * ROOM_FACTOR
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ReleaseError(f"not enough room in {folder} to install release {version}: "
                           f"{free / 1e6:.0f} MB free, about {need / 1e6:.0f} MB needed")
    path = folder / version
    if path.exists() or path.is_symlink():
        guard.remove_release(state_dir, version)          # an earlier, failed or rolled back
    started = time.monotonic()
    # Marked from the moment it has its name: a cut at any point leaves debris the next
    # start removes, never a directory that looks like a release.
    fresh = folder / f".{version}.{os.getpid()}"
    fresh.mkdir(mode=0o750)
    (fresh / guard.INCOMPLETE).touch()
    os.rename(fresh, path)
    try:
        _install_into(bundle, manifest, path)
        (path / guard.RELEASE_INFO).write_text(json.dumps(
            {"format": BUNDLE_FORMAT, **asdict(manifest), "installed": time.time()},
            indent=1) + "\n")
        _sync()
        os.unlink(path / guard.INCOMPLETE)
        guard._fsync_dir(path)
    except BaseException as exc:
        shutil.rmtree(path, ignore_errors=True)
        if isinstance(exc, ReleaseError):
            raise
        if isinstance(exc, (OSError, subprocess.SubprocessError)):
            raise ReleaseError(f"installing release {version} failed: {exc}") from None
        raise
    log.info("release %s installed in %s (%.1f s, %.0f MB)", version, path,
             time.monotonic() - started, disk_usage(path) / 1e6)
    return version


def _install_into(bundle, manifest: Manifest, path: Path) -> None:
    unpacked = path / ".bundle"
    unpacked.mkdir()
    with tarfile.open(bundle, "r:") as tar:
        for member in tar:
            if member.name in manifest.files:                    # names checked: no paths
                with tar.extractfile(member) as src, open(unpacked / member.name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    # Read again from the unpacked copy: what pip installs is what was checked.
    for name, entry in manifest.files.items():
        if _sha256(unpacked / name) != entry["sha256"]:
            raise ReleaseError(f"{name} changed on the disk while installing")
    venv.EnvBuilder(symlinks=True, with_pip=False,
                    system_site_packages=manifest.system_site_packages).create(path)
    python = str(path / "bin" / "python")
    pip = [python, str(unpacked / manifest.installer / "pip"), "--isolated",
           "--disable-pip-version-check", "--no-cache-dir"]
    wheels = [str(unpacked / n) for n in sorted(manifest.files) if n != manifest.installer]
    _run([*pip, "install", "--no-index", "--no-deps", "--no-warn-script-location", *wheels],
         "pip install")
    _run([*pip, "check"], "pip check")
    said = _run([python, "-P", "-m", "chargepoint", "--version"],
                "chargepoint --version").strip()
    if said != f"chargepoint {manifest.version}":
        raise ReleaseError(f"the installed release says {said!r}, its manifest "
                           f"{manifest.version}")
    shutil.rmtree(unpacked)


def _run(command: list[str], what: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env,
                                timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{what} took longer than {INSTALL_TIMEOUT_S:g} s") from None
    if result.returncode:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        raise ReleaseError(f"{what} failed (status {result.returncode}): " + " / ".join(tail))
    return result.stdout


def _sync() -> None:
    """Everything of the new release on the card before it counts as installed."""
    try:
        os.sync()
    except OSError:                     # a system call filter may refuse it
        pass


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes in the files under `path` (links not followed)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


# ------------------------------------------------------------------------------ the trial

@dataclass(frozen=True)
class Rollback:
    version: str               # the release that failed
    previous: str              # the release that runs again
    reason: str
    at: float                  # time.time()


@dataclass(frozen=True)
class Trial:
    """What the firmware reads at start: the release on trial (if one is) and the last
    rollback (if one happened)."""

    on_trial: bool
    version: Optional[str]
    previous: Optional[str]
    starts: int
    trial_s: float
    last_rollback: Optional[Rollback]

    def running_on_trial(self, version: str = __version__) -> bool:
        return self.on_trial and self.version == version

    @property
    def seconds_left(self) -> Optional[float]:
        """Read at a start: the whole trial time is left of this start (each start of a
        release on trial has `trial_s`); None when none is on trial."""
        return self.trial_s if self.on_trial else None


def start_trial(version: str, state_dir: str | os.PathLike, policy: Any = None) -> None:
    """Make the installed `version` current, on trial: `policy` is the `[releases]`
    settings (trial_s, trial_starts, keep, watchdog_s; defaults without). The running
    release is registered first if the state directory has none yet. The process
    then restarts into it (`Launch.command`)."""
    defaults = guard.Policy()
    chosen = guard.Policy(**{name: getattr(policy, name, getattr(defaults, name))
                             for name in guard.Policy.__dataclass_fields__})
    try:
        if guard.current_version(state_dir) is None:
            _register_running(state_dir)
        guard.begin_trial(state_dir, version, chosen)
    except (guard.GuardError, OSError) as exc:
        raise ReleaseError(f"cannot switch to release {version}: {exc}") from None
    log.warning("release %s is current, on trial (previous %s); restarting into it",
                version, __version__)


def _register_running(state_dir) -> None:
    """The release that runs now, as the one to come back to."""
    home = Path(sys.prefix).absolute()
    if home.parent == guard.releases_dir(state_dir).absolute():
        guard.switch(state_dir, home.name)           # one of these releases: only the link
        return
    if sys.prefix == sys.base_prefix:
        raise ReleaseError(f"this firmware ({sys.prefix}) is not in a virtual environment, "
                           "so it cannot be come back to; install it as "
                           "systemd/README-install.md says")
    version = guard.adopt(state_dir, sys.prefix, log=_guard_log)
    if version != __version__:
        raise ReleaseError(f"{sys.prefix} holds release {version}, but {__version__} runs")


def trial(state_dir: str | os.PathLike) -> Optional[Trial]:
    record = guard.read_trial(state_dir)
    rolled = guard.read_rollback(state_dir)
    if record is None and rolled is None:
        return None
    last = (Rollback(rolled.version, rolled.previous, rolled.reason, rolled.at)
            if rolled is not None and (record is None or rolled.id != record.id) else None)
    return Trial(on_trial=record is not None,
                 version=record.version if record else None,
                 previous=record.previous if record else None,
                 starts=record.starts if record else 0,
                 trial_s=record.trial_s if record else 0.0,
                 last_rollback=last)


def commit(state_dir: str | os.PathLike) -> None:
    """The release that runs passed its trial: keep it; delete the oldest releases beyond
    the configured count. Nothing if no release is on trial."""
    try:
        guard.commit(state_dir, __version__, log=_guard_log)
    except (guard.GuardError, OSError) as exc:
        raise ReleaseError(f"cannot commit release {__version__}: {exc}") from None


def rollback(state_dir: str | os.PathLike, reason: str) -> None:
    """The release on trial failed (`reason`): the previous one becomes current again;
    the process must restart (`Launch.command`) to run it."""
    try:
        guard.roll_back(state_dir, reason, log=_guard_log)
    except OSError as exc:
        raise ReleaseError(f"cannot roll back: {exc}") from None


def _guard_log(level: str, text: str) -> None:
    log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO),
            "%s", text)


# ------------------------------------------------------------------------------ restarting

class Launch:
    """How this process started, and the command that continues it after a restart: the
    same release again, or the current one if `current` moved meanwhile (a switch, a
    rollback). A launch of another release goes through a guard: the one that watches
    this process (the unit's, a supervisor), else a supervisor this process becomes."""

    def __init__(self, state_dir: Optional[str], argv: list[str]):
        self.state_dir = state_dir or None
        self.argv = list(argv)
        self.current_at_start = self._current()

    def _current(self) -> Optional[str]:
        return guard.current_version(self.state_dir) if self.state_dir else None

    def supervision(self) -> Optional[list[str]]:
        """At start: the command to become a supervisor with, when a release is on trial
        and no guard watches this process (a start by hand after a power cut); else
        None."""
        if self.state_dir is None or guard.read_trial(self.state_dir) is None \
                or guard.guarded(self.state_dir):
            return None
        return guard.supervise_command(self.state_dir, self.argv)

    def again(self) -> list[str]:
        """This very release once more."""
        return [sys.executable, "-m", "chargepoint", *self.argv]

    def command(self) -> list[str]:
        current = self._current()
        if current is None or current == self.current_at_start:
            return self.again()
        if guard.guarded(self.state_dir):
            guard.start(self.state_dir, _guard_log)       # counts a launch on trial
            current = guard.current_version(self.state_dir) or current
            return guard.launch_command(self.state_dir, current, self.argv)
        return guard.supervise_command(self.state_dir, self.argv)


class TrialDeadline:
    """A release on trial that is not committed within `trial_s` of its start is rolled
    back (`on_expiry` then ends the process, which restarts into the previous one). A
    supervisor checks the same from outside; this covers the service, where systemd's
    watchdog sees a hung loop but not a release that runs without reaching the CSMS."""

    def __init__(self, state_dir: Optional[str], on_expiry: Callable[[], None]):
        self.state_dir = state_dir or None
        self.on_expiry = on_expiry
        self.expired = False
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        record = guard.read_trial(self.state_dir) if self.state_dir else None
        if record is None or record.version != __version__:
            return
        self._thread = threading.Thread(target=self._wait, args=(record,),
                                        name="trial-deadline", daemon=True)
        self._thread.start()

    def _wait(self, record: guard.TrialRecord) -> None:
        if self._cancel.wait(record.trial_s):
            return
        now = guard.read_trial(self.state_dir)
        if now is None or now.id != record.id:
            return                                  # committed or ended meanwhile
        guard.roll_back(self.state_dir, f"it did not pass its trial within "
                                        f"{record.trial_s:g} s", _guard_log)
        self.expired = True
        self.on_expiry()

    def cancel(self) -> None:
        self._cancel.set()
