from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedhei.cache import cache_dir
from fedhei.data import cifar10 as data_module
from fedhei.data.cifar10 import CLASSES, load_cifar10, make_synthetic
from fedhei.errors import FedheiError


def test_synthetic_is_seeded_and_cifar_shaped() -> None:
    first, second = make_synthetic(seed=3), make_synthetic(seed=3)
    assert first.train.images.shape == (6000, 32, 32, 3) and first.train.images.dtype == np.uint8
    assert np.array_equal(first.train.images, second.train.images)
    assert np.array_equal(np.bincount(first.train.labels), np.full(10, 600))
    assert not np.array_equal(first.train.images, make_synthetic(seed=4).train.images)


def test_real_tarball_has_full_cifar10_and_second_load_uses_cache(real_tarball: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_cifar10(str(real_tarball))
    assert first.train.images.shape == (50000, 32, 32, 3)
    assert first.test.images.shape == (10000, 32, 32, 3)
    assert np.array_equal(np.bincount(first.train.labels), np.full(10, 5000))
    assert np.array_equal(np.bincount(first.test.labels), np.full(10, 1000))
    assert len(list((cache_dir() / "cifar10").glob("*.npz"))) == 1

    def no_decoding(path: Path) -> list:
        raise AssertionError("the second load decoded JPEGs instead of reading the cache")

    monkeypatch.setattr(data_module, "_decode_tarball", no_decoding)
    second = load_cifar10(str(real_tarball))
    assert np.array_equal(first.test.images, second.test.images)
    assert first.fingerprint == second.fingerprint


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_image_folder(root: Path, per_class: int = 2) -> None:
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                (folder / f"{index:04d}.jpg").write_bytes(_jpeg((label * 25, 0, 0)))


def test_image_folder_labels_follow_sorted_class_names(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "c10")
    loaded = load_cifar10(str(tmp_path / "c10"))
    assert len(loaded.train) == 20 and len(loaded.test) == 20
    reds = loaded.train.images[:, :, :, 0].mean(axis=(1, 2))
    assert np.allclose(reds, loaded.train.labels * 25, atol=4)


def test_tarball_of_a_folder_loads_like_the_folder(tmp_path: Path) -> None:
    _write_image_folder(tmp_path / "c10")
    archive = tmp_path / "c10.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(tmp_path / "c10" / "train", arcname="train")
        handle.add(tmp_path / "c10" / "test", arcname="test")
    from_tar, from_folder = load_cifar10(str(archive)), load_cifar10(str(tmp_path / "c10"))
    assert np.array_equal(from_tar.train.labels, from_folder.train.labels)
    assert np.array_equal(from_tar.train.images, from_folder.train.images)


def _cache_files() -> list[Path]:
    return sorted((cache_dir() / "cifar10").glob("*")) if (cache_dir() / "cifar10").exists() else []


@pytest.mark.parametrize("payload", [b"this is not a tarball", None], ids=["garbage", "truncated"])
def test_corrupt_tarball_is_one_clear_error_and_leaves_no_cache(tmp_path: Path, payload: bytes | None) -> None:
    if payload is None:
        _write_image_folder(tmp_path / "c10", per_class=30)
        whole = tmp_path / "whole.tar.gz"
        with tarfile.open(whole, "w:gz") as handle:
            handle.add(tmp_path / "c10", arcname=".")
        payload = whole.read_bytes()[: whole.stat().st_size // 2]
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(payload)
    before = _cache_files()
    with pytest.raises(FedheiError, match="broken.tar.gz"):
        load_cifar10(str(broken))
    assert _cache_files() == before


def test_missing_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(FedheiError, match="does not exist"):
        load_cifar10(str(tmp_path / "nowhere"))


def test_missing_source_on_the_command_line_is_one_line_without_traceback(tmp_path: Path, expect_one_line_error) -> None:
    expect_one_line_error("data", "--data", str(tmp_path / "nowhere"), message="does not exist")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--dirichlet-alpha", "0"], "dirichlet-alpha is 0.0"), (["--num-clients", "100000"], "num-clients is 100000")],
)
def test_bad_split_on_the_command_line_is_one_line(arguments: list[str], message: str, expect_one_line_error) -> None:
    expect_one_line_error("data", "--data", "synthetic", *arguments, message=message)
