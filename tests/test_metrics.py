"""Tests of flowinv.metrics: PSNR against its definition, SSIM sanity, batching, validation."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from flowinv import metrics


def _image(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=shape).astype(np.float32)


def test_psnr_of_known_mse():
    ref = np.full((8, 8, 1), 0.5, np.float32)
    # MSE 0.01 with data range 1 -> 10 log10(1 / 0.01) = 20 dB; the float32 difference
    # (0.5 + 0.1) − 0.5 is off by ~2.4e-7 relative, which moves the PSNR by ~2e-6 dB (measured
    # 2.1e-6 and 5e-7 dB for the two signs), within the 1e-5 dB bound.
    assert metrics.psnr(ref + 0.1, ref) == pytest.approx(20.0, abs=1e-5)
    assert metrics.psnr(ref - 0.1, ref) == pytest.approx(20.0, abs=1e-5)
    # data_range 2 (x not clipped: 0.6 < 2): 10 log10(4 / 0.01)
    assert metrics.psnr(ref + 0.1, ref, data_range=2.0) == pytest.approx(
        10 * math.log10(400.0), abs=1e-5)


def test_psnr_identical_is_inf_and_accepts_jax():
    x = _image((6, 5, 3))
    assert metrics.psnr(x, x) == math.inf
    value = metrics.psnr(jnp.asarray(x) + 0.05, jnp.asarray(x))
    assert isinstance(value, float)
    assert value == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-4)


def test_psnr_clips_the_estimate_only():
    ref = _image((6, 6, 1))
    ref[0, 0, 0], ref[1, 1, 0] = 1.0, 0.0
    x = ref.copy()
    x[0, 0, 0], x[1, 1, 0] = 1.7, -0.4  # overshoots that clipping removes exactly
    assert metrics.psnr(x, ref) == math.inf
    # the reference is used as given: one pixel of it at 1.005 (within the 1% a reference may
    # overshoot), matched by the estimate, leaves an error of 0.005 after the estimate's clip
    # (clipping both would give inf)
    ref[2, 2, 0] = x[2, 2, 0] = 1.005
    mse = (np.float32(1.005) - 1.0) ** 2 / ref.size
    assert metrics.psnr(x, ref) == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.batch_psnr,
                                metrics.batch_ssim])
def test_a_reference_outside_the_data_range_is_refused(fn):
    x = _image((2, 8, 8, 1) if fn.__name__.startswith("batch") else (8, 8, 1))
    x.flat[0] = 1.0
    with pytest.raises(ValueError, match=r"ref must lie in \[0, data_range\].*data_range=255"):
        fn(x * 255, x * 255)  # an 8-bit scale with the default data_range=1
    with pytest.raises(ValueError, match="ref must lie"):
        fn(x - 0.5, x - 0.5)  # below 0 by more than 1%
    assert np.all(np.asarray(fn(x * 255 + 1, x * 255, data_range=255)) < math.inf)
    fn(x * 1.01, x * 1.01)  # up to 1% above the range passes


def test_ssim_identical_is_one_and_noise_lowers_it():
    for shape in [(28, 28, 1), (16, 16, 3), (5, 5, 1)]:
        x = _image(shape)
        # skimage computes SSIM in float64; identical inputs give 1 up to rounding.
        assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    x = _image((16, 16, 3))
    rng = np.random.default_rng(1)
    e = rng.normal(size=x.shape).astype(np.float32)
    s = [metrics.ssim(x + t * e, x) for t in (0.02, 0.1, 0.3)]
    assert s[0] > s[1] > s[2]
    assert s[0] < 1.0


def _ssim_by_hand(x, ref, data_range):
    """Wang et al.'s SSIM from its definition, for the window skimage is documented to use: the
    mean over every 7×7 window that fits inside the image (skimage filters the whole image and
    crops the 3-pixel border its windows would reflect into) and over channels, of
    ``(2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` with sample (ddof = 1)
    moments, C1 = (0.01 R)², C2 = (0.03 R)²."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, w, channels = x.shape
    vals = []
    for c in range(channels):
        for i in range(h - 6):
            for j in range(w - 6):
                a = x[i:i + 7, j:j + 7, c].astype(np.float64).ravel()
                b = ref[i:i + 7, j:j + 7, c].astype(np.float64).ravel()
                cov = np.cov(a, b)  # ddof = 1
                vals.append((2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
                            / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("shape", [(7, 7, 1), (10, 9, 2)])
def test_ssim_is_its_definition_with_a_uniform_7x7_window(shape):
    """Values, not only orderings: the window, the constants and ``data_range`` are what the
    docstring says. float64 both ways: agreement to rounding (1e-12)."""
    x, ref = _image(shape, 5), _image(shape, 6)
    assert metrics.ssim(x, ref) == pytest.approx(_ssim_by_hand(x, ref, 1.0), abs=1e-12)
    assert metrics.ssim(255 * x, 255 * ref, data_range=255) == pytest.approx(
        _ssim_by_hand(255 * x, 255 * ref, 255.0), abs=1e-12)


def test_ssim_averages_channels():
    x, ref = _image((12, 12, 3), 1), _image((12, 12, 3), 2)
    per_channel = [metrics.ssim(x[..., i:i + 1], ref[..., i:i + 1]) for i in range(3)]
    # float64 mean of three float64 numbers: agreement to rounding.
    assert metrics.ssim(x, ref) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_batch_versions_match_single_calls():
    xs, refs = _image((3, 10, 10, 1), 3), _image((3, 10, 10, 1), 4)
    p, s = metrics.batch_psnr(xs, jnp.asarray(refs)), metrics.batch_ssim(xs, refs)
    assert p.shape == s.shape == (3,)
    np.testing.assert_array_equal(p, [metrics.psnr(a, b) for a, b in zip(xs, refs, strict=True)])
    np.testing.assert_array_equal(s, [metrics.ssim(a, b) for a, b in zip(xs, refs, strict=True)])


def test_validation():
    x = _image((8, 8, 1))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x, x[:4])
    with pytest.raises(ValueError, match="x must have shape"):
        metrics.psnr(x[..., 0], x)
    with pytest.raises(ValueError, match="x must have shape"):
        metrics.batch_ssim(x, x)
    with pytest.raises(ValueError, match="at least 3x3"):
        metrics.ssim(x[:2, :2], x[:2, :2])
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(x, x, data_range=0.0)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.batch_psnr,
                                metrics.batch_ssim])
def test_a_reference_with_nan_is_refused(fn):
    """A NaN lies in no range: it used to pass the range check (nanmin/nanmax skip it) and
    every score against the reference came out NaN without a word."""
    ref = _image((2, 8, 8, 1) if fn.__name__.startswith("batch") else (8, 8, 1))
    bad = ref.copy()
    bad.flat[3] = np.nan
    with pytest.raises(ValueError, match="ref must lie"):
        fn(ref, bad)


def test_data_range_may_be_a_numpy_integer():
    """``data_range=img.max()`` of an 8-bit image is a NumPy integer, as good a number as 255."""
    x = (_image((8, 8, 1)) * 255).round()
    for dr in (np.int64(255), np.uint8(255)):
        assert metrics.psnr(x + 1, x, data_range=dr) == metrics.psnr(x + 1, x, data_range=255)
    with pytest.raises(TypeError):
        metrics.psnr(x, x, data_range=np.True_)
