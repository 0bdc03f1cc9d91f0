"""Pinned source archives: hack/lib.sh's fetch_source and criops' patches to them."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PATCHES = REPO / "hack" / "patches"
LEGACY_RUNTIMES = REPO / "hack" / "legacy-runtimes.sh"
# Pins of the source archives hack/legacy-runtimes.sh builds, by prefix in hack/versions.env.
PINS = ("SINGULARITY", "SINGULARITY_CRI", "CRI_TOOLS_V1ALPHA2", "VIRTLET")
# The archive each patch folder applies to.
PATCHED = {
    "singularity-3.4.1": "SINGULARITY",
    "singularity-cri-1.0.0-beta.7": "SINGULARITY_CRI",
    "cri-tools-v1.13.0": "CRI_TOOLS_V1ALPHA2",
    "virtlet-1.5.1": "VIRTLET",
}


def source_mirror(env: dict[str, str] | None = None, script: Path = LEGACY_RUNTIMES) -> str | None:
    """The source mirror the legacy builds use (hack/legacy-runtimes.sh --mirror), or None."""
    found = subprocess.run([str(script), "--mirror"], capture_output=True, text=True, env=env, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def _local_mirror() -> Path | None:
    url = source_mirror()
    return Path(url.removeprefix("file://")) if url and url.startswith("file://") else None


MIRROR = _local_mirror()
NO_MIRROR = "no local source mirror (hack/legacy-runtimes.sh --mirror)"
HAS_MIRROR = MIRROR is not None and (MIRROR / "SHA256SUMS").is_file()


def versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            pins[key.strip()] = value.strip()
    return pins


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_archive_is_pinned_with_a_name_version_sha256_and_upstream_url():
    pins = versions()
    for pin in PINS:
        assert pins[f"{pin}_VERSION"], pin
        assert pins[f"{pin}_ARCHIVE"].endswith(".tar.gz"), pin
        assert re.fullmatch(r"[0-9a-f]{64}", pins[f"{pin}_SHA256"]), pin
        assert pins[f"{pin}_URL"].startswith("https://github.com/"), pin


def test_every_patch_folder_names_a_pinned_version():
    pins = versions()
    assert {folder.name for folder in PATCHES.iterdir()} == set(PATCHED)
    for folder, pin in PATCHED.items():
        assert folder.endswith("-" + pins[f"{pin}_VERSION"]), folder


def test_the_virtlet_version_stamp_is_its_pinned_commit():
    pins = versions()
    commit = pins["VIRTLET_COMMIT"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit in pins["VIRTLET_URL"]
    # `git describe` of that commit: the tag, commits since, and its short hash.
    assert re.fullmatch(rf"v{re.escape(pins['VIRTLET_VERSION'])}-\d+-g{commit[:8]}", pins["VIRTLET_GIT_VERSION"])


@pytest.mark.skipif(not HAS_MIRROR, reason=NO_MIRROR)
def test_the_pins_match_the_local_mirror():
    sums = dict(reversed(line.split()) for line in (MIRROR / "SHA256SUMS").read_text().splitlines() if line)
    pins = versions()
    for pin in PINS:
        assert sums[pins[f"{pin}_ARCHIVE"]] == pins[f"{pin}_SHA256"], pin


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of hack/lib.sh and its pins in a checkout of its own, with no mirror beside it."""
    root = tmp_path / "repo"
    (root / "hack").mkdir(parents=True)
    for name in ("lib.sh", "versions.env", "legacy-runtimes.sh"):
        shutil.copy(REPO / "hack" / name, root / "hack" / name)
    return root


def test_the_mirror_is_the_configured_one_or_none(checkout: Path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(checkout)}
    script = checkout / "hack" / "legacy-runtimes.sh"
    assert source_mirror(env, script) is None
    assert source_mirror({**env, "CRIOPS_SOURCE_MIRROR": "/srv/sources/"}, script) == "file:///srv/sources"
    assert source_mirror({**env, "CRIOPS_SOURCE_MIRROR": "https://m.example/src"}, script) == "https://m.example/src"
    beside = checkout.parent / "shared" / "sources"
    beside.mkdir(parents=True)
    (beside / "SHA256SUMS").write_text("")
    assert source_mirror(env, script) == f"file://{beside}"


def fetch(root: Path, archive: str, url: str, sum_: str, mirror: str | None = None):
    script = f'. "{root}/hack/lib.sh"\nTEST_ARCHIVE={archive} TEST_SHA256={sum_} TEST_URL={url}\nfetch_source TEST\n'
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "CRIOPS_CACHE": str(root.parent / "cache")}
    if mirror is not None:
        env["CRIOPS_SOURCE_MIRROR"] = mirror
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)


def test_fetch_source_takes_the_mirror_over_the_upstream_url_and_caches_the_archive(checkout: Path):
    mirror = checkout.parent / "mirror"
    mirror.mkdir()
    (mirror / "x-1.0.tar.gz").write_bytes(b"mirrored")
    result = fetch(checkout, "x-1.0.tar.gz", "file:///nonexistent/x.tar.gz", sha256(b"mirrored"), f"file://{mirror}")
    assert result.returncode == 0, result.stderr
    cached = Path(result.stdout.strip())
    assert cached == checkout.parent / "cache" / "sources" / "x-1.0.tar.gz"
    assert cached.read_bytes() == b"mirrored"


def test_fetch_source_uses_the_upstream_url_without_a_mirror(checkout: Path):
    upstream = checkout.parent / "upstream.tar.gz"
    upstream.write_bytes(b"upstream")
    result = fetch(checkout, "x-1.0.tar.gz", f"file://{upstream}", sha256(b"upstream"))
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes() == b"upstream"


def test_fetch_source_refuses_an_archive_whose_sha256_differs_and_keeps_nothing(checkout: Path):
    upstream = checkout.parent / "upstream.tar.gz"
    upstream.write_bytes(b"tampered")
    pinned = sha256(b"genuine")
    result = fetch(checkout, "x-1.0.tar.gz", f"file://{upstream}", pinned)
    assert result.returncode != 0
    # The message names the archive, the pinned and the actual sum.
    assert "x-1.0.tar.gz" in result.stderr
    assert pinned in result.stderr
    assert sha256(b"tampered") in result.stderr
    assert not list((checkout.parent / "cache" / "sources").iterdir())


def test_fetch_source_checks_a_cached_archive_again(checkout: Path):
    cached = checkout.parent / "cache" / "sources" / "x-1.0.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"corrupted in the cache")
    result = fetch(checkout, "x-1.0.tar.gz", "file:///nonexistent/x.tar.gz", sha256(b"genuine"))
    assert result.returncode != 0
    assert "sha256 mismatch for x-1.0.tar.gz" in result.stderr


@pytest.mark.parametrize("patch", sorted(PATCHES.glob("*/*.patch")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_patch_says_why_before_its_diff(patch: Path):
    header = patch.read_text().split("\n--- a/", 1)[0]
    assert "Why:" in header
    assert "patch -p1" in header


@pytest.mark.skipif(not HAS_MIRROR, reason=NO_MIRROR)
@pytest.mark.parametrize("folder", sorted(PATCHED))
def test_the_patches_apply_to_their_pinned_archive(folder: str, tmp_path: Path):
    pins = versions()
    patches = sorted((PATCHES / folder).glob("*.patch"))
    assert patches
    touched = {m for p in patches for m in re.findall(r"^\+\+\+ b/(\S+)", p.read_text(), re.M)}
    archive = (MIRROR / pins[f"{PATCHED[folder]}_ARCHIVE"]).read_bytes()
    assert sha256(archive) == pins[f"{PATCHED[folder]}_SHA256"]
    # Only the files the patches touch, without the archive's top directory.
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            relative = member.name.partition("/")[2]
            if relative in touched:
                member.name = relative
                tar.extract(member, tmp_path, filter="data")
    for patch in patches:
        result = subprocess.run(
            ["patch", "-d", str(tmp_path), "-p1", "--forward", "--batch", "-i", str(patch)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
