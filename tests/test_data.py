"""experiments.harness.data: torchvision's real readers on small files in the
real formats (written here, md5 tables patched to match), source resolution offline, the stand-in's cache, batches."""

import hashlib
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

from experiments.harness import data, synthetic

SVHN = torchvision.datasets.SVHN
CIFAR10 = torchvision.datasets.CIFAR10


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """No download host is reachable, and any attempt to open a URL fails at once."""
    monkeypatch.setattr(data, "_host_reachable", lambda url: False)
    monkeypatch.setattr("urllib.request.urlopen", _refuse)


def _refuse(*args, **kwargs):
    raise OSError("network disabled in tests")


# ---------------------------------------------------------------------------------------------
# Small files in the real formats
# ---------------------------------------------------------------------------------------------


def write_svhn(root: Path, split: str, n: int, monkeypatch, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """{split}_32x32.mat as SVHN ships it: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 (10 is digit 0)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # includes 10
    path = root / f"{split}_32x32.mat"
    scipy.io.savemat(path, {"X": X, "y": y})
    url, name, _ = SVHN.split_list[split]
    monkeypatch.setitem(SVHN.split_list, split, [url, name, md5(path)])
    return X, y


def write_cifar(root: Path, n: int, monkeypatch) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py/ as CIFAR-10 ships it: pickled dicts with rows (N, 3072) uint8, channel-major."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written, listed = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": rows, "labels": labels}))
        written[name], listed[name] = (rows, labels), md5(folder / name)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", listed[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", listed["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return written


# ---------------------------------------------------------------------------------------------
# Real readers
# ---------------------------------------------------------------------------------------------


def test_svhn_layout_and_labels(tmp_path, monkeypatch):
    X, y = write_svhn(tmp_path, "train", 20, monkeypatch)
    train = data.load_split("svhn", "train", tmp_path, download=False)
    assert (train.source, train.split, len(train)) == ("svhn", "train", 20)
    assert train.images.dtype == torch.uint8 and train.images.shape == (20, 3, 32, 32)
    assert train.images[7, 2, 5, 11] == X[5, 11, 2, 7]  # X[h, w, c, i] -> images[i, c, h, w]
    assert torch.equal(train.images, torch.from_numpy(X).permute(3, 2, 0, 1))
    assert torch.equal(train.labels, torch.from_numpy(y[:, 0] % 10).long())  # 10 -> 0
    assert train.labels.dtype == torch.int64 and 0 in train.labels


def test_cifar10_layout_and_labels(tmp_path, monkeypatch):
    written = write_cifar(tmp_path, 6, monkeypatch)
    train = data.load_split("cifar10", "train", tmp_path, download=False)
    test = data.load_split("cifar10", "test", tmp_path, download=False)
    rows, labels = written["data_batch_2"]
    assert len(train) == 30 and len(test) == 6
    assert train.images[6 + 4, 1, 3, 17] == rows[4, 1 * 1024 + 3 * 32 + 17]  # row = 3 x 32 x 32, channel-major
    assert torch.equal(train.images[6:12], torch.from_numpy(rows).view(6, 3, 32, 32))
    assert train.labels[6:12].tolist() == labels
    assert torch.equal(test.images, torch.from_numpy(written["test_batch"][0]).view(6, 3, 32, 32))


def test_corrupt_file_is_reported_not_used(tmp_path, offline):
    """md5 mismatch (e.g. a half-finished download): one DatasetError naming the file and the remedy."""
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    for download in (False, True):
        with pytest.raises(data.DatasetError, match="corrupt") as error:
            data.load_split("svhn", "train", tmp_path, download=download)
        message = str(error.value)
        assert str(path) in message and "delete" in message and "re-download" in message
        assert SVHN.split_list["train"][0] in message
    assert path.read_bytes() == b"MATLAB 5.0 MAT-file, truncated"  # left for the user to inspect


def test_failed_download_is_reported(tmp_path, monkeypatch):
    """Host reachable, but the download fails: the reader's error becomes one DatasetError."""
    monkeypatch.setattr(data, "_host_reachable", lambda url: True)
    monkeypatch.setattr("urllib.request.urlopen", _refuse)
    with pytest.raises(data.DatasetError, match="network disabled") as error:
        data.load_split("svhn", "test", tmp_path, download=True)
    assert str(tmp_path / "test_32x32.mat") in str(error.value)


def test_unparsable_file_is_reported(tmp_path, monkeypatch):
    """A file whose md5 matches but which scipy cannot parse."""
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"not a MAT file at all" * 10)
    url, name, _ = SVHN.split_list["train"]
    monkeypatch.setitem(SVHN.split_list, "train", [url, name, md5(path)])
    with pytest.raises(data.DatasetError) as error:
        data.load_split("svhn", "train", tmp_path, download=False)
    assert str(path) in str(error.value)


def test_missing_cifar_names_expected_files(tmp_path, offline):
    with pytest.raises(data.DatasetError) as error:
        data.load_split("cifar10", "train", tmp_path, download=True)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message and "missing" in message
    assert CIFAR10.url in message


# ---------------------------------------------------------------------------------------------
# Choosing a source
# ---------------------------------------------------------------------------------------------


def test_auto_falls_back_loudly_when_offline(tmp_path, offline, capsys):
    with pytest.warns(UserWarning, match="SYNTHETIC") as record:
        source, provenance = data.resolve_source("auto", "svhn", tmp_path)
    reason = provenance.pop("fallback_reason")
    assert source == "synthetic" and "unreachable" in reason
    assert provenance == {"requested": "auto", "source": "synthetic", "root": str(tmp_path)}
    assert str(tmp_path / "train_32x32.mat") in str(record[0].message)
    assert "SYNTHETIC" in capsys.readouterr().err


def test_auto_uses_present_files_without_warning(tmp_path, offline, monkeypatch):
    write_svhn(tmp_path, "train", 4, monkeypatch)
    write_svhn(tmp_path, "test", 4, monkeypatch, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source, provenance = data.resolve_source("auto", "svhn", tmp_path)
    assert source == "svhn" and provenance["fallback_reason"] is None


def test_auto_uses_cifar_archive_offline(tmp_path, offline, monkeypatch):
    """An intact archive is enough: torchvision extracts it without a network."""
    archive = tmp_path / CIFAR10.filename
    archive.write_bytes(b"stand-in archive")
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(archive))
    assert data.resolve_source("auto", "cifar10", tmp_path)[0] == "cifar10"


def test_auto_picks_real_when_host_reachable(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_host_reachable", lambda url: True)
    assert data.resolve_source("auto", "cifar10", tmp_path) == (
        "cifar10",
        {"requested": "auto", "source": "cifar10", "root": str(tmp_path), "fallback_reason": None},
    )


def test_corrupt_file_is_not_a_reason_to_fall_back(tmp_path, offline):
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(b"partial download")
    with pytest.raises(data.DatasetError, match="delete") as error:
        data.resolve_source("auto", "svhn", tmp_path)
    assert f"{path} (corrupt)" in str(error.value)


def test_explicit_real_source_missing_offline_raises(tmp_path, offline):
    with pytest.raises(data.DatasetError, match="train_32x32.mat"):
        data.resolve_source("svhn", "cifar10", tmp_path)


def test_synthetic_needs_no_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_host_reachable", _refuse)
    assert data.resolve_source("synthetic", "svhn", tmp_path)[0] == "synthetic"


def test_probe_of_unresolvable_host_is_false():
    assert data._host_reachable("http://host.invalid/file") is False  # .invalid never resolves (RFC 2606)


@pytest.mark.parametrize(
    "call",
    [
        lambda root: data.resolve_source("mnist", "svhn", root),
        lambda root: data.resolve_source("auto", "synthetic", root),
        lambda root: data.load_split("mnist", "train", root),
        lambda root: data.load_split("synthetic", "valid", root),
    ],
)
def test_unknown_choices_are_rejected(tmp_path, call):
    with pytest.raises(ValueError, match="must be one of"):
        call(tmp_path)


# ---------------------------------------------------------------------------------------------
# The synthetic stand-in's cache (the generator itself: test_synthetic.py)
# ---------------------------------------------------------------------------------------------


def test_synthetic_splits_and_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("A3_SYNTHETIC_CACHE")  # the default place, under the data root
    train = data.load_split("synthetic", "train", tmp_path, synthetic_size=64, seed=3)
    test = data.load_split("synthetic", "test", tmp_path, synthetic_size=64, seed=3)
    assert (train.source, train.split, test.split) == ("synthetic", "train", "test")
    assert not torch.equal(train.images, test.images)
    cache = tmp_path / "synthetic" / f"digits-v{synthetic.VERSION}-train-64-seed3.pt"
    assert cache.is_file()
    assert len(list(cache.parent.iterdir())) == 2  # train and test, no temporary file left behind

    monkeypatch.setattr(data, "synthetic_digits", _refuse)  # a second load must not render
    again = data.load_split("synthetic", "train", tmp_path, synthetic_size=64, seed=3)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_corrupt_cache_is_rendered_again(tmp_path, monkeypatch):
    monkeypatch.delenv("A3_SYNTHETIC_CACHE")
    first = data.load_split("synthetic", "test", tmp_path, synthetic_size=32)
    cache = tmp_path / "synthetic" / f"digits-v{synthetic.VERSION}-test-32-seed0.pt"
    cache.write_bytes(cache.read_bytes()[:100])
    again = data.load_split("synthetic", "test", tmp_path, synthetic_size=32)
    assert torch.equal(again.images, first.images)
    assert torch.equal(torch.load(cache, weights_only=True)["images"], first.images)  # repaired


def test_the_synthetic_cache_folder_can_be_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("A3_SYNTHETIC_CACHE", str(tmp_path / "shared"))
    first = data.load_split("synthetic", "test", tmp_path / "a", synthetic_size=16)
    monkeypatch.setattr(data, "synthetic_digits", _refuse)  # another data root reads the same file
    again = data.load_split("synthetic", "test", tmp_path / "b", synthetic_size=16)
    assert torch.equal(again.images, first.images) and (tmp_path / "shared").is_dir()
    assert not (tmp_path / "a" / "synthetic").exists()


# ---------------------------------------------------------------------------------------------
# ImageSet, conversions, batches
# ---------------------------------------------------------------------------------------------


def test_subset():
    images = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(200)  # each image carries its index
    full = data.ImageSet(images=images, labels=torch.arange(200) % 10, source="synthetic", split="train")
    assert full.subset(None) is full and full.subset(200) is full
    part = full.subset(50, seed=1)
    assert len(part) == 50 and (part.source, part.split) == ("synthetic", "train")
    index = part.images[:, 0, 0, 0].long()
    assert torch.equal(index, index.sort().values) and len(index.unique()) == 50  # sorted, no repeats
    assert torch.equal(part.labels, index % 10)
    assert torch.equal(full.subset(50, seed=1).images, part.images)
    assert not torch.equal(full.subset(50, seed=2).images, part.images)


def test_image_set_rejects_wrong_layout():
    with pytest.raises(ValueError, match="uint8"):
        data.ImageSet(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "svhn", "train")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        data.ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 10]), "svhn", "train")


def test_float_conversion_round_trip():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = data.to_float(x)
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    torch.testing.assert_close(y, (x / 255.0 - 0.5) / 0.5)  # ToTensor, then Normalize(0.5, 0.5)
    assert torch.equal(data.to_uint8(y), x)
    assert data.to_uint8(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0, 128, 255]  # clamped, rounded
    with pytest.raises(TypeError):
        data.to_float(y)


def test_iterate_batches():
    def shuffled(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return list(data.iterate_batches(10, 4, shuffle=True, drop_last=False, generator=generator))

    batches = shuffled(0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10)) and batches[0].dtype == torch.int64
    assert all(torch.equal(a, b) for a, b in zip(batches, shuffled(0)))
    assert not torch.equal(torch.cat(batches), torch.cat(shuffled(1)))
    assert [b.tolist() for b in data.iterate_batches(10, 4, shuffle=False, drop_last=True)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert list(data.iterate_batches(3, 4, shuffle=False, drop_last=True)) == []
    with pytest.raises(ValueError):
        data.iterate_batches(10, 0, shuffle=False, drop_last=False)
