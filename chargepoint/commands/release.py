"""`chargepoint release build|verify|sign|install|status` (release bundles,
docs/firmware-update.md) and `chargepoint install-files` (the unit and its companions)."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from chargepoint.log_setup import setup_logging

log = logging.getLogger("chargepoint")


def cmd_install_files(args) -> int:
    from chargepoint.install_files import (  # lazy: install-files only
        SHIPPED, InstallFilesError, install_files)

    try:
        done = install_files(args.dest, force=args.force)
    except InstallFilesError as exc:
        print(f"chargepoint install-files: {exc}", file=sys.stderr)
        return 1
    targets = {item.name: item.target for item in SHIPPED}
    for path, state in done:
        print(f"{state:9} {path}  (goes to {targets[path.name]})")
    return 0


def cmd_release_build(args) -> int:
    from chargepoint.releases import ReleaseError, build_bundle  # lazy: this command's

    try:
        bundle = build_bundle(args.out, platform=args.platform, python=args.python,
                              progress=lambda line: print(line, flush=True))
    except ReleaseError as exc:
        print(f"chargepoint release build: {exc}", file=sys.stderr)
        return 1
    print(bundle)
    return 0


def cmd_release_verify(args) -> int:
    from chargepoint.releases import (  # lazy: this command's
        ReleaseError, read_manifest, verify_bundle, verify_bundle_signature)

    if (args.signature is None) != (args.certificate is None) or \
            (args.root is not None and args.signature is None):
        print("chargepoint release verify: --signature and --certificate go together "
              "(--root with them)", file=sys.stderr)
        return 2
    try:
        if args.signature is not None:
            signature = _read_text_file(args.signature, "signature")
            certificate = _read_text_file(args.certificate, "certificate")
            root = _read_text_file(args.root, "root") if args.root else None
            verify_bundle_signature(args.bundle, signature, certificate, root, time.time())
            print(f"signature verified: {Path(args.bundle).name} is signed by the key of "
                  f"{args.certificate}"
                  f"{f', a certificate issued under {args.root}' if args.root else ''}")
        manifest = read_manifest(args.bundle)
        print(f"release {manifest.version} for {manifest.platform}, Python {manifest.python}"
              f"{f', glibc {manifest.glibc} or newer' if manifest.glibc else ''}: "
              f"{len(manifest.files)} wheels, {manifest.size / 1e6:.1f} MB, every file as "
              f"its manifest says (built {manifest.built})")
        verify_bundle(args.bundle)
    except ReleaseError as exc:
        print(f"chargepoint release verify: {exc}", file=sys.stderr)
        return 1
    print("it installs on this machine")
    return 0


def _read_text_file(path: str, what: str) -> str:
    from chargepoint.releases import ReleaseError  # lazy: the release commands'

    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"cannot read the {what} {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None


def cmd_release_sign(args) -> int:
    from chargepoint.releases import ReleaseError, sign_bundle  # lazy: this command's

    try:
        try:
            key = Path(args.key).read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read the key {args.key}: {exc.strerror or exc}") \
                from None
        password = None
        if args.password_env:
            password = os.environ.get(args.password_env, "").encode() or None
        signature = sign_bundle(args.bundle, key, password)
        if args.out:
            Path(args.out).write_text(signature + "\n", encoding="ascii")
    except (ReleaseError, OSError) as exc:
        print(f"chargepoint release sign: {exc}", file=sys.stderr)
        return 1
    print(f"signature of {Path(args.bundle).name} written to {args.out}" if args.out
          else signature)
    return 0


def _release_state_dir(args) -> str:
    from chargepoint.config import state_directory  # lazy: the release commands'

    return state_directory(args.state_dir)


def cmd_release_install(args) -> int:
    from chargepoint.releases import ReleaseError, install_bundle  # lazy: this command's

    setup_logging("info")
    state_dir = _release_state_dir(args)
    try:
        version = install_bundle(args.bundle, state_dir)
    except ReleaseError as exc:
        print(f"chargepoint release install: {exc}", file=sys.stderr)
        return 1
    print(f"release {version} installed in {state_dir}/releases/{version}; make it current "
          f"with release-guard.py use {state_dir} {version} (docs/firmware-update.md)")
    return 0


def cmd_release_status(args) -> int:
    from chargepoint.release_guard import status  # lazy: this command's

    print(status(_release_state_dir(args)))
    return 0
