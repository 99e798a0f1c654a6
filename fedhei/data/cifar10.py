"""CIFAR-10 as uint8 arrays, from whichever source this machine has.

Sources, chosen by one setting (``data-source``):

- ``synthetic``: a small, seeded, learnable CIFAR-shaped set for fast tests;
- a ``.tar.gz`` or a folder laid out ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``
  (the JPEG copy shipped to machines without internet access);
- a folder holding torchvision's ``cifar-10-batches-py`` (or that folder itself);
- ``download``: torchvision's downloader, for machines that are online.

Decoded image folders and tarballs are cached as one ``.npz`` keyed by the source's
checksum, written atomically, so the second load skips JPEG decoding.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from fedhei import seeding
from fedhei.cache import cache_dir
from fedhei.data.array_cache import read_arrays, write_arrays
from fedhei.errors import FedheiError

DATA_ENV = "FEDHEI_CIFAR10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASSES)
IMAGE_SHAPE = (32, 32, 3)
SYNTHETIC = "synthetic"
DOWNLOAD = "download"
# Where the machines of this project keep the JPEG copy, relative to a checkout.
_SHARED_TARBALL = Path("..") / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
# The arrays of a decoded source's cache file.
CACHED_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


# (split, class name, file name, image bytes) for every image of an image-folder source.
Sample = tuple[str, str, str, bytes]
DecodeFn = Callable[[Path], list[Sample]]


@dataclass(frozen=True)
class Split:
    """Images as ``(N, 32, 32, 3)`` uint8 and labels as ``(N,)`` int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Cifar10:
    train: Split
    test: Split
    source: str
    # Identifies the exact content, so caches built on top (base models) follow it.
    fingerprint: str


def load_cifar10(source: str | None = None) -> Cifar10:
    """Load CIFAR-10 from ``source``, or search the usual places when it is empty."""
    if source:
        return _load_from(source)
    local = _discover_local_source()
    if local is not None:
        return _load_from(local)
    torchvision_root = cache_dir() / "torchvision"
    try:
        return _load_torchvision(torchvision_root, download=True)
    except FedheiError as error:
        raise FedheiError(
            "no CIFAR-10 found: set data-source (or --data), or $FEDHEI_CIFAR10, to a "
            "cifar-10-batches-py folder, an image folder or a .tar.gz; looked in "
            f"{torchvision_root} and {_SHARED_TARBALL}, and the download failed ({error})"
        ) from error


@lru_cache(maxsize=2)
def load_cifar10_cached(source: str | None = None) -> Cifar10:
    """Process-wide memo of :func:`load_cifar10`: simulation workers load once, not per client."""
    return load_cifar10(source)


def _discover_local_source() -> str | None:
    env = os.environ.get(DATA_ENV)
    if env:
        return env
    torchvision_root = cache_dir() / "torchvision"
    if (torchvision_root / "cifar-10-batches-py").is_dir():
        return str(torchvision_root)
    for candidate in (_SHARED_TARBALL, Path(__file__).resolve().parents[1] / _SHARED_TARBALL):
        if candidate.is_file():
            return str(candidate.resolve())
    return None


def _load_from(source: str) -> Cifar10:
    if source == SYNTHETIC:
        return make_synthetic()
    if source == DOWNLOAD:
        return _load_torchvision(cache_dir() / "torchvision", download=True)
    path = Path(source).expanduser()
    if not path.exists():
        raise FedheiError(f"data source {source} does not exist; give a CIFAR-10 folder, a .tar.gz, "
                          f"'{SYNTHETIC}' or '{DOWNLOAD}'")
    if path.is_dir() and ((path / "cifar-10-batches-py").is_dir() or path.name == "cifar-10-batches-py"):
        root = path.parent if path.name == "cifar-10-batches-py" else path
        return _load_torchvision(root, download=False)
    if path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir():
        return _cached_decode(path, _folder_fingerprint(path), _decode_folder)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _cached_decode(path, _file_sha256(path), _decode_tarball)
    raise FedheiError(f"data source {source} is neither a .tar.gz, a folder with train/ and test/, "
                      "nor a cifar-10-batches-py folder")


def _load_torchvision(root: Path, download: bool) -> Cifar10:
    """torchvision's own reader; its batches are pickles, which torchvision opens itself."""
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except (OSError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FedheiError(f"cannot load torchvision CIFAR-10 from {root}: {reason}") from error
    fingerprint = hashlib.sha256(np.ascontiguousarray(train.data[:64]).tobytes()).hexdigest()[:16]
    return Cifar10(
        train=Split(np.asarray(train.data, dtype=np.uint8), np.asarray(train.targets, dtype=np.int64)),
        test=Split(np.asarray(test.data, dtype=np.uint8), np.asarray(test.targets, dtype=np.int64)),
        source=str(root),
        fingerprint=f"torchvision-{fingerprint}",
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_fingerprint(root: Path) -> str:
    """Names, sizes and modification times: cheap, and changes whenever a file does."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cached_decode(path: Path, checksum: str, decode: DecodeFn) -> Cifar10:
    cache_file = cache_dir() / "cifar10" / f"{checksum[:32]}.npz"
    fingerprint = f"jpeg-{checksum[:16]}"
    stored = read_arrays(cache_file, CACHED_ARRAYS)
    if stored is not None:
        return Cifar10(
            train=Split(stored["train_images"], stored["train_labels"]),
            test=Split(stored["test_images"], stored["test_labels"]),
            source=str(path),
            fingerprint=fingerprint,
        )
    data = _assemble(decode(path), path)
    write_arrays(cache_file, dict(zip(CACHED_ARRAYS, (data.train.images, data.train.labels, data.test.images,
                                                      data.test.labels), strict=True)))
    return Cifar10(train=data.train, test=data.test, source=str(path), fingerprint=fingerprint)


def _decode_tarball(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                parts = parts[1:] if parts and parts[0] == "." else parts
                if not member.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test"):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                samples.append((parts[-3], parts[-2], parts[-1], handle.read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise FedheiError(f"cannot read tarball {path}: {error or type(error).__name__}; "
                          "it may be truncated or corrupt, fetch a fresh copy") from error
    return samples


def _decode_folder(root: Path) -> list[Sample]:
    return [
        (split, file.parent.name, file.name, file.read_bytes())
        for split in ("train", "test")
        for file in sorted((root / split).glob("*/*"))
        if file.is_file()
    ]


def _assemble(samples: list[Sample], origin: Path) -> Cifar10:
    from PIL import Image, UnidentifiedImageError

    class_names = sorted({class_name for _, class_name, _, _ in samples})
    if len(class_names) != NUM_CLASSES:
        raise FedheiError(f"{origin} has {len(class_names)} class folders ({', '.join(class_names[:12])}); "
                          f"CIFAR-10 needs {NUM_CLASSES}: {', '.join(CLASSES)}")
    label_of = {name: index for index, name in enumerate(class_names)}
    splits: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "test": ([], [])}
    for split, class_name, file_name, payload in sorted(samples, key=lambda s: (s[0], s[1], s[2])):
        try:
            with Image.open(io.BytesIO(payload)) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as error:
            raise FedheiError(f"{origin}: {split}/{class_name}/{file_name} is not a readable image; "
                              "the source is corrupt, fetch a fresh copy") from error
        if pixels.shape != IMAGE_SHAPE:
            raise FedheiError(f"{origin}: {split}/{class_name}/{file_name} is {pixels.shape[1]}x{pixels.shape[0]}, "
                              "CIFAR-10 images are 32x32")
        splits[split][0].append(pixels)
        splits[split][1].append(label_of[class_name])
    for split, (images, _) in splits.items():
        if not images:
            raise FedheiError(f"{origin} has no {split} images; expected {split}/<class>/*.jpg")
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    return Cifar10(
        train=Split(np.stack(train_images), np.asarray(train_labels, dtype=np.int64)),
        test=Split(np.stack(test_images), np.asarray(test_labels, dtype=np.int64)),
        source=str(origin),
        fingerprint="",
    )


def make_synthetic(num_train: int = 6000, num_test: int = 1500, seed: int = 0) -> Cifar10:
    """A learnable stand-in for CIFAR-10: one smooth colour template per class plus noise.

    Each image is its class template, shifted by a few pixels and covered in strong
    noise, so a tiny ViT beats chance within a few hundred steps but not in one.
    """
    rng = seeding.rng(seed, "synthetic-data")
    coarse = rng.uniform(-1.0, 1.0, size=(NUM_CLASSES, 4, 4, 3))
    templates = np.kron(coarse, np.ones((1, 10, 10, 1)))[:, :36, :36, :]

    def draw(count: int) -> Split:
        labels = np.arange(count) % NUM_CLASSES
        rng.shuffle(labels)
        shifts = rng.integers(0, 5, size=(count, 2))
        images = np.empty((count, *IMAGE_SHAPE), dtype=np.float32)
        for index, (label, (dy, dx)) in enumerate(zip(labels, shifts, strict=True)):
            images[index] = templates[label, dy : dy + 32, dx : dx + 32]
        images = 128 + 40 * images + rng.normal(0.0, 45.0, size=images.shape)
        return Split(np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64))

    return Cifar10(train=draw(num_train), test=draw(num_test), source=SYNTHETIC, fingerprint=f"synthetic-{seed}")
