"""The VM image cache (image/build.py): a new recipe's image replaces all but the newest
older one, so switching recipes does not fill the disk a gigabyte at a time."""
from __future__ import annotations

import fcntl
import importlib.util
import io
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_recipe():
    spec = importlib.util.spec_from_file_location("image_build", ROOT / "image" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_older_images_of_an_arch_are_pruned_to_the_newest_kept(tmp_path, monkeypatch):
    recipe = load_recipe()
    monkeypatch.setenv("CHARGEPOINT_VM_CACHE", str(tmp_path))
    for age, name in enumerate(["debian12-amd64-c", "debian12-amd64-b", "debian12-amd64-a",
                                "debian12-arm64-a", "debian12-arm64-b"]):
        image = tmp_path / name
        image.mkdir()
        (image / "rootfs.img").write_bytes(b"")
        os.utime(image, (1_000_000 - age * 100, 1_000_000 - age * 100))
        (tmp_path / f".{name}.lock").write_text("")
    (tmp_path / "debian12-amd64-z.building").mkdir()          # a build under way: not an image
    said = io.StringIO()
    gone = recipe.prune("amd64", keep=2, log=said)
    assert [p.name for p in gone] == ["debian12-amd64-a"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "debian12-amd64-b", "debian12-amd64-c", "debian12-amd64-z.building",
        "debian12-arm64-a", "debian12-arm64-b"]
    assert not (tmp_path / ".debian12-amd64-a.lock").exists(), "the pruned image's lock stays"
    assert (tmp_path / ".debian12-amd64-b.lock").exists()
    assert "removed the older image" in said.getvalue()


def test_a_pruned_images_lock_held_by_a_build_stays(tmp_path, monkeypatch):
    recipe = load_recipe()
    monkeypatch.setenv("CHARGEPOINT_VM_CACHE", str(tmp_path))
    for age, name in enumerate(["debian12-amd64-b", "debian12-amd64-a"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rootfs.img").write_bytes(b"")
        os.utime(tmp_path / name, (1_000_000 - age * 100, 1_000_000 - age * 100))
    lock = tmp_path / ".debian12-amd64-a.lock"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        recipe.prune("amd64", keep=1, log=io.StringIO())
        assert lock.exists()
