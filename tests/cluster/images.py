"""Container images for the test node, made here without a registry or a docker engine.

The node's runtime pulls nothing: every image it runs is built on this machine and
imported with ``ctr images import``. Three kinds:

- the sandbox ("pause") image and a small test image (busybox-static from Debian)
  are written directly as docker-archive tarballs: one layer, a config, a manifest;
- a Python base image is a Debian rootfs from ``debootstrap`` (python3 + pip),
  written the same way;
- nsprov's image is built from the project's Dockerfile by buildah (daemonless,
  chroot isolation, private storage) with that base as its ``BASE`` build argument.

Every tarball is cached in ``~/.cache/nsprov/images`` under a name that carries
the hash of its inputs, so a warm run only reads files and hashes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import build

REPO = Path(__file__).resolve().parents[2]
PAUSE_IMAGE = "nsprov.local/pause:1"
BUSYBOX_IMAGE = "nsprov.local/busybox:1"
COREDNS_IMAGE = f"nsprov.local/coredns:{build.COREDNS_VERSION}"
BASE_IMAGE = "nsprov.local/python-base:bookworm"
NSPROV_IMAGE = "nsprov.local/nsprov:test"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the base holds beyond debootstrap's minbase: what python:3.11-slim offers the Dockerfile.
BASE_PACKAGES = ("python3", "python3-pip", "ca-certificates")
_PRUNED = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_Packages",
    "var/cache/debconf/*-old",
)
# Bump to rebuild every cached image when the way they are written changes.
_FORMAT = "2"
_EPOCH = 1_700_000_000  # fixed mtime: same inputs, same bytes, same image ID


class ImageError(RuntimeError):
    """An image could not be built."""


@dataclass(frozen=True)
class Image:
    """A docker-archive tarball ready for ``ctr images import`` and the name it carries."""

    name: str
    tarball: Path


def images_dir() -> Path:
    return build.cache_root() / "images"


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part).digest())
    return hasher.hexdigest()[:16]


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, _EPOCH
    tar.addfile(info, io.BytesIO(data))


def _add_entry(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, _EPOCH, target
    tar.addfile(info)


def write_docker_archive(
    destination: Path,
    name: str,
    layer: bytes,
    config: dict[str, object],
) -> Image:
    """Write a one-layer image as a docker-archive (what ``ctr images import`` reads)."""
    diff_id = hashlib.sha256(layer).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/cluster/images.py"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [name], "Layers": [f"{diff_id}/layer.tar"]}]
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    with tarfile.open(tmp, "w") as tar:
        _add_entry(tar, f"{diff_id}/", tarfile.DIRTYPE, 0o755)
        _add_file(tar, f"{diff_id}/layer.tar", layer)
        _add_file(tar, config_name, config_bytes)
        _add_file(tar, "manifest.json", json.dumps(manifest).encode())
    os.replace(tmp, destination)
    _drop_older(destination)
    return Image(name, destination)


def _drop_older(current: Path) -> None:
    """Remove this image's tarballs built from older inputs: each one is hundreds of MB."""
    kind = current.name.rsplit("-", 1)[0]
    for other in current.parent.glob(f"{kind}-*.tar"):
        if other != current and other.name.rsplit("-", 1)[0] == kind:
            other.unlink(missing_ok=True)


def _layer(files: dict[str, bytes], links: dict[str, str], dirs: tuple[str, ...]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in dirs:
            _add_entry(tar, f"{directory}/", tarfile.DIRTYPE, 0o755)
        for path, data in sorted(files.items()):
            _add_file(tar, path, data, 0o755)
        for path, target in sorted(links.items()):
            _add_entry(tar, path, tarfile.SYMTYPE, 0o777, target)
    return buffer.getvalue()


def pause_binary() -> Path:
    """The sandbox program (tests/cluster/go/pause), built once per source hash."""
    source = build.GO_DIR / "pause"
    key = _digest((source / "main.go").read_bytes(), (source / "go.mod").read_bytes())
    output = build.cache_root() / f"pause-{key}" / "pause"
    if not output.exists():
        build.go_build(source, ".", output, "-s -w")
    return output


def pause_image() -> Image:
    binary = pause_binary().read_bytes()
    path = images_dir() / f"pause-{_digest(binary, _FORMAT.encode())}.tar"
    if path.exists():
        return Image(PAUSE_IMAGE, path)
    layer = _layer({"pause": binary}, {}, ())
    return write_docker_archive(path, PAUSE_IMAGE, layer, {"Entrypoint": ["/pause"]})


def coredns_image() -> Image:
    """CoreDNS (tests/cluster/go/coredns) alone on a layer: a static binary needs nothing else."""
    binary = build.ensure_node_built().coredns.read_bytes()
    path = images_dir() / f"coredns-{_digest(binary, _FORMAT.encode())}.tar"
    if path.exists():
        return Image(COREDNS_IMAGE, path)
    layer = _layer({"coredns": binary}, {}, ("etc", "tmp"))
    return write_docker_archive(path, COREDNS_IMAGE, layer, {"Entrypoint": ["/coredns"]})


def busybox_image() -> Image:
    """busybox-static (Debian's) with its applets linked in /bin: sh, sleep, echo, wget..."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.exists():
        raise ImageError("busybox is not installed (apt-get install busybox-static)")
    binary = busybox.read_bytes()
    path = images_dir() / f"busybox-{_digest(binary, _FORMAT.encode())}.tar"
    if path.exists():
        return Image(BUSYBOX_IMAGE, path)
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = {f"bin/{applet}": "busybox" for applet in applets if applet != "busybox"}
    layer = _layer({"bin/busybox": binary}, links, ("bin", "tmp"))
    config = {"Cmd": ["sh"], "Env": ["PATH=/bin"]}
    return write_docker_archive(path, BUSYBOX_IMAGE, layer, config)


def _run(command: list[str], what: str, **kwargs: object) -> None:
    started = time.monotonic()
    print(f"{what} ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    print(f"{what}: {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def base_image() -> Image:
    """A Python base from Debian (debootstrap minbase + python3, pip), like python:3.11-slim.

    Keyed by suite, package list and format, not by date: a rebuild is an explicit
    cache removal, so test runs do not drift with the mirror.
    """
    key = _digest(DEBIAN_SUITE.encode(), " ".join(BASE_PACKAGES).encode(), _FORMAT.encode())
    path = images_dir() / f"python-base-{key}.tar"
    if path.exists():
        return Image(BASE_IMAGE, path)
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="nsprov-base-", dir=images_dir_ready()) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            "debootstrap of the Python base image",
        )
        # The image's Python is the image's own: pip may install into it, as in python:*-slim.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        # What a slim image leaves out: docs, man pages, translations, apt's caches.
        for pattern in _PRUNED:
            for entry in rootfs.glob(pattern):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        layer_path = Path(tmp) / "layer.tar"
        with tarfile.open(layer_path, "w") as tar:
            tar.add(str(rootfs), arcname=".", filter=_skip_runtime_dirs)
        config = {
            "Cmd": ["python3"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        }
        return write_docker_archive(path, BASE_IMAGE, layer_path.read_bytes(), config)


def _skip_runtime_dirs(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # /proc, /sys and /dev are mounted by the runtime; debootstrap may leave nodes there.
    parts = Path(info.name).parts
    if len(parts) > 2 and parts[1] in ("proc", "sys", "dev"):
        return None
    return info


def images_dir_ready() -> Path:
    directory = images_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _project_inputs() -> bytes:
    """Everything the Dockerfile copies (per .dockerignore) plus the Dockerfile itself."""
    paths = [REPO / "Dockerfile", REPO / "pyproject.toml", REPO / "README.md"]
    paths += sorted(
        p for p in (REPO / "service").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    return b"".join(str(p.relative_to(REPO)).encode() + p.read_bytes() for p in paths)


def nsprov_image() -> Image:
    """nsprov's image, built from the Dockerfile by buildah on the Debian Python base."""
    base = base_image()
    key = _digest(_project_inputs(), base.tarball.name.encode(), _FORMAT.encode())
    path = images_dir() / f"nsprov-{key}.tar"
    if path.exists():
        return Image(NSPROV_IMAGE, path)
    if shutil.which("buildah") is None:
        raise ImageError("buildah is not installed (apt-get install buildah)")
    with tempfile.TemporaryDirectory(prefix="nsprov-buildah-", dir=images_dir_ready()) as tmp:
        storage = [
            f"--root={tmp}/storage",
            f"--runroot={tmp}/run",
            "--storage-driver=vfs",
        ]
        _run(
            ["buildah", *storage, "pull", f"docker-archive:{base.tarball}"],
            "buildah: load the Python base",
        )
        _run(
            [
                "buildah",
                *storage,
                "bud",
                "--isolation=chroot",
                "--network=host",
                f"--build-arg=BASE={BASE_IMAGE}",
                # RUN steps trust what this machine trusts (pip may reach PyPI through a
                # TLS-inspecting proxy), without baking its CAs into the image.
                "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
                "--pull-never",
                "--layers=false",
                f"--tag={NSPROV_IMAGE}",
                str(REPO),
            ],
            "buildah bud of the Dockerfile",
        )
        output = Path(tmp) / "nsprov.tar"
        _run(
            ["buildah", *storage, "push", NSPROV_IMAGE, f"docker-archive:{output}:{NSPROV_IMAGE}"],
            "buildah: write the image",
        )
        os.replace(output, path)
        _drop_older(path)
        # vfs storage is a full copy per layer; chmod lets rmtree remove read-only dirs.
        subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
    return Image(NSPROV_IMAGE, path)
