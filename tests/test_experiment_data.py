"""How the experiments pick their test and validation images and their default prior for a
dataset of the user's own (a folder of images): validation never reuses a reported image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from experiments import common


def _write_images(folder, n, channels, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (12, 12, channels), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(folder / f"{i:02d}.png")


def _rows(images):
    return {img.tobytes() for img in images}


def test_flat_folder_validates_on_images_after_the_test_images(tmp_path, capsys):
    _write_images(tmp_path / "flat", 6, 3, seed=0)
    test, val = common.load_test_and_val(f"folder:{tmp_path / 'flat'}", (12, 12, 3), 2, 3)
    everything = common.load_test_and_val(f"folder:{tmp_path / 'flat'}", (12, 12, 3), 5, 1)[0]
    assert test.shape == (2, 12, 12, 3) and val.shape == (3, 12, 12, 3)
    assert not _rows(test) & _rows(val)
    np.testing.assert_array_equal(val, everything[2:5])  # the next images in folder order
    assert "no training split apart from its test images" in capsys.readouterr().err


def test_folder_with_train_subfolder_validates_on_it(tmp_path, capsys):
    _write_images(tmp_path / "split" / "test", 3, 1, seed=1)
    _write_images(tmp_path / "split" / "train", 3, 1, seed=2)
    spec = f"folder:{tmp_path / 'split'}"
    test, val = common.load_test_and_val(spec, (12, 12, 1), 2, 2)
    from flowinv import data

    np.testing.assert_array_equal(val, data.load_dataset(spec, "train", limit=2))
    assert not _rows(test) & _rows(val)
    assert "no training split" not in capsys.readouterr().err


def test_flat_folder_too_small_for_test_and_validation_is_an_error(tmp_path):
    _write_images(tmp_path / "two", 2, 3, seed=3)
    with pytest.raises(ValueError, match="at least 3 images"):
        common.load_test_and_val(f"folder:{tmp_path / 'two'}", (12, 12, 3), 2, 1)


def test_a_folder_with_fewer_images_than_asked_for_says_so(tmp_path, capsys):
    _write_images(tmp_path / "five", 5, 1, seed=5)
    test, val = common.load_test_and_val(f"folder:{tmp_path / 'five'}", (12, 12, 1), 4, 3)
    assert len(test) == 4 and len(val) == 1
    assert "gave 4 of the 4 test and 1 of the 3 validation images" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_init_study_training_starts_are_never_test_images(tmp_path, layout):
    from experiments import init_study

    if layout == "flat":
        _write_images(tmp_path / "d", 6, 1, seed=6)
    else:
        _write_images(tmp_path / "d" / "test", 3, 1, seed=6)
        _write_images(tmp_path / "d" / "train", 3, 1, seed=7)
    config = init_study.Config(dataset=f"folder:{tmp_path / 'd'}", num_images=2)
    starts = init_study._training_images(config, (12, 12, 1), 8, np.random.default_rng(0))
    test = common.load_test_and_val(config.dataset, (12, 12, 1), 2, 1)[0]
    assert starts.shape == (8, 12, 12, 1) and not _rows(starts) & _rows(test)
    if layout == "split":  # drawn from train/, not from the test images after the first 2
        from flowinv import data

        assert _rows(starts) <= _rows(data.load_dataset(config.dataset, "train"))


def test_train_images_of_an_evaluation_only_set_follow_its_test_images():
    from flowinv import data

    images = common.load_train_images("lfw", (12, 12, 1), 2, 3)
    everything = data.load_dataset("lfw", "test", image_shape=(12, 12, 1), limit=5)
    np.testing.assert_array_equal(images, everything[3:5])


def test_bundled_training_split_is_used_for_validation(capsys):
    from flowinv import data

    test, val = common.load_test_and_val("digits", (8, 8, 1), 3, 2)
    assert val.shape == (2, 8, 8, 1) and not _rows(test) & _rows(val)
    # the training split's first images, not the test images after the first 3
    np.testing.assert_array_equal(val, data.load_dataset("digits", "train", image_shape=(8, 8, 1),
                                                         limit=2))
    assert "no training split" not in capsys.readouterr().err


def test_val_split_test_validates_on_the_test_images_after_the_reported_ones():
    from flowinv import data

    test, val = common.load_test_and_val("digits", (8, 8, 1), 3, 2, val_split="test")
    split = data.load_dataset("digits", "test", image_shape=(8, 8, 1))
    np.testing.assert_array_equal(test, split[:3])
    np.testing.assert_array_equal(val, split[3:5])
    train = data.load_dataset("digits", "train", image_shape=(8, 8, 1))
    assert not _rows(val) & (_rows(test) | _rows(train))
    with pytest.raises(ValueError, match="val_split"):
        common.load_test_and_val("digits", (8, 8, 1), 3, 2, val_split="val")


@pytest.mark.parametrize("spec", ["patches64", "patches32"])
def test_val_split_test_never_validates_on_a_reported_test_photograph(spec):
    """The patch sets are split by photograph; their test images after the reported ones are
    crops of the same two test photos (from 20 reported patches on, downscaled views of the
    very pixels reported on), so ``--val-split test`` either refuses them or validates on
    photographs that no reported patch comes from."""
    from flowinv import data

    size = int(spec[len("patches"):])
    _, src = data.load_patches(size, "test", return_sources=True)
    for num_test, num_val in ((2, 2), (50, 10)):
        try:
            common.load_test_and_val(spec, (size, size, 3), num_test, num_val, val_split="test")
        except ValueError as e:
            assert "by photograph" in str(e) and "--val-split train" in str(e)
            continue
        reported = set(src["photo"][:num_test])
        assert not reported & set(src["photo"][num_test: num_test + num_val])
    with pytest.raises(ValueError, match="by photograph"):
        common._check_test_split_leaves_validation_images(spec, 2)


@pytest.mark.parametrize("module", ["denoise", "compressed_sensing", "inpainting", "subpixel",
                                    "structured_noise", "noisy_cs", "one_bit_cs"])
def test_every_validating_experiment_takes_val_split(module):
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    for argv, split in (([], "train"), (["--val-split", "test"], "test")):
        config = mod.config_from_args(mod.build_parser().parse_args(argv))
        assert config.val_split == split
    assert mod.Config().val_split == "train"  # run(Config()) from Python too


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("module", ["denoise", "compressed_sensing", "inpainting", "subpixel",
                                    "structured_noise", "noisy_cs", "one_bit_cs"])
def test_every_validating_experiment_loads_its_images_with_its_val_split(module, monkeypatch):
    """``run`` hands the config's split to :func:`common.load_test_and_val` (stopped there: the
    prior is a stand-in that only has a shape)."""
    import dataclasses
    import importlib
    import types

    mod = importlib.import_module(f"experiments.{module}")
    asked = []

    def load_test_and_val(spec, shape, num_test, num_val, val_split="train"):
        asked.append(val_split)
        raise _Loaded

    flow = types.SimpleNamespace(image_shape=(28, 28, 1), dim=784)
    monkeypatch.setattr(common, "setup_run", lambda config: (None, "prior", flow, None))
    monkeypatch.setattr(common, "load_test_and_val", load_test_and_val)
    fields = {f.name for f in dataclasses.fields(mod.Config)}
    config = dataclasses.replace(mod.Config(), val_split="test",
                                 **({"gan": "none"} if "gan" in fields else {}))
    with pytest.raises(_Loaded):
        mod.run(config)
    assert asked == ["test"]


@pytest.mark.parametrize("channels,prior", [(3, "glow-patches64"), (1, "glow-mnist")])
def test_default_prior_of_a_folder_follows_its_channels(tmp_path, capsys, channels, prior):
    _write_images(tmp_path / "imgs", 1, channels, seed=4)
    assert common.default_prior(f"folder:{tmp_path / 'imgs'}") == prior
    assert prior in capsys.readouterr().err  # the choice is announced


def test_a_colour_folder_whose_first_image_is_grey_gets_the_colour_prior(tmp_path, capsys):
    """Colour is judged from the first images, not the first one alone (a grey scan first in
    name order made a folder of photos 28×28 grey); sizes may differ."""
    folder = tmp_path / "mixed"
    _write_images(folder, 1, 1, seed=8)  # 00.png, grey
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / "01.png")
    from flowinv import data

    assert data.dataset_channels(f"folder:{folder}") == 3
    assert data.dataset_channels(f"folder:{folder}", limit=1) == 1
    assert common.default_prior(f"folder:{folder}") == "glow-patches64"


def test_an_unreadable_training_image_is_an_error_not_a_missing_split(tmp_path):
    """A bad file in train/ used to move validation onto the test images, silently."""
    _write_images(tmp_path / "d" / "test", 4, 1, seed=9)
    _write_images(tmp_path / "d" / "train", 3, 1, seed=10)
    (tmp_path / "d" / "train" / "03.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*03\.png"):
        common.load_test_and_val(f"folder:{tmp_path / 'd'}", (12, 12, 1), 2, 4)


def test_a_training_copy_of_a_test_image_is_left_out_alone(tmp_path, capsys):
    """One training image equal to a test image is dropped; the rest of train/ validates
    (it used to drop the whole training split, with a note saying there was none)."""
    _write_images(tmp_path / "d" / "test", 2, 1, seed=11)
    _write_images(tmp_path / "d" / "train", 3, 1, seed=12)
    (tmp_path / "d" / "train" / "00.png").write_bytes((tmp_path / "d" / "test" / "01.png")
                                                      .read_bytes())
    spec = f"folder:{tmp_path / 'd'}"
    test, val = common.load_test_and_val(spec, (12, 12, 1), 2, 3)
    from flowinv import data

    np.testing.assert_array_equal(val, data.load_dataset(spec, "train")[1:])
    assert not _rows(test) & _rows(val)
    err = capsys.readouterr().err
    assert "1 training image of" in err and "no training split" not in err


@pytest.mark.parametrize("num_test", [1, 2])
def test_a_copy_of_the_first_test_image_first_in_train_leaves_the_rest_of_train(
        tmp_path, capsys, num_test):
    """Where the copy sorts first in train/ and equals test image 0, train/ is still a split of
    its own (decided by its files, not by its first images); the images after the copy make up
    the count."""
    _write_images(tmp_path / "d" / "test", 4, 1, seed=14)
    _write_images(tmp_path / "d" / "train", 6, 1, seed=15)
    (tmp_path / "d" / "train" / "00.png").write_bytes((tmp_path / "d" / "test" / "00.png")
                                                      .read_bytes())
    spec = f"folder:{tmp_path / 'd'}"
    test, val = common.load_test_and_val(spec, (12, 12, 1), num_test, 3)
    from flowinv import data

    np.testing.assert_array_equal(val, data.load_dataset(spec, "train")[1:4])
    err = capsys.readouterr().err
    assert "1 training image of" in err and "no training split" not in err


def test_only_a_test_subfolder_validates_on_the_test_images_after_the_reported_ones(
        tmp_path, capsys):
    _write_images(tmp_path / "d" / "test", 5, 1, seed=13)
    spec = f"folder:{tmp_path / 'd'}"
    test, val = common.load_test_and_val(spec, (12, 12, 1), 2, 2)
    from flowinv import data

    np.testing.assert_array_equal(val, data.load_dataset(spec, "test")[2:4])
    assert "no training split" in capsys.readouterr().err


@pytest.mark.parametrize("spec,prior", [("mnist", "glow-mnist"), ("digits", "glow-digits"),
                                        ("patches64", "glow-patches64"),
                                        ("cartoon", "glow-patches64"), ("lfw", "glow-mnist")])
def test_default_prior_of_bundled_datasets(spec, prior):
    assert common.default_prior(spec) == prior


def test_default_gan_follows_the_prior_shape_for_other_datasets(capsys):
    gan = common.load_gan_or_none(None, "folder:/anything", (64, 64, 3))
    assert gan is not None and tuple(gan[0].image_shape) == (64, 64, 3)
    assert common.load_gan_or_none(None, "folder:/anything", (8, 8, 1)) is None
    assert "no shipped DCGAN" in capsys.readouterr().err


@pytest.mark.parametrize("n,text", [(0, "0 test images"), (1, "1 test image"),
                                    (2, "2 test images")])
def test_count_makes_the_noun_plural_unless_one(n, text):
    assert common.count(n, "test image") == text


def test_result_table_writes_seconds_per_image():
    """A batched solve's seconds are shared by its images: each row holds its share (the
    summaries' seconds_per_image average them)."""
    table = common.ResultTable("e", "d", "p")
    table.add(method="m", psnr=[1.0, 2.0, 3.0], ssim=[0.1, 0.2, 0.3], seconds=6.0,
              image_ids=[0, 1, 2])
    assert [row["seconds"] for row in table.rows] == [2.0, 2.0, 2.0]
    assert [row["image_id"] for row in table.rows] == [0, 1, 2]
