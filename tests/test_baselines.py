"""Tests of flowinv.baselines: BM3D, the JAX wavelet transform, Lasso by FISTA, the Deep
Decoder and the DCGAN. Operators are a tiny stand-in (a dense matrix pytree), so these tests
do not depend on flowinv.operators."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pywt
from flax import struct
from jax.scipy.fft import idctn

from flowinv.baselines import classical, dcgan, deep_decoder, imle


@struct.dataclass
class Dense:
    """Stand-in linear operator: ``y = M vec(x)``."""

    matrix: jax.Array
    in_shape: tuple = struct.field(pytree_node=False)
    is_linear = True

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)

    def __call__(self, x):
        return self.matrix @ x.reshape(-1)

    def A(self, x):  # noqa: N802
        return self(x)

    def A_adjoint(self, y):  # noqa: N802
        return (self.matrix.T @ y).reshape(self.in_shape)


def gaussian(key, shape, m):
    n = int(np.prod(shape))
    return Dense(jax.random.normal(key, (m, n)) / np.sqrt(m), tuple(shape))


def piecewise_smooth(shape, seed=0):
    """A rectangle and a disc on a smooth ramp, values in [0.1, 0.9]."""
    h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    rng = np.random.default_rng(seed)
    img = np.empty(shape, np.float32)
    for i in range(c):
        a, b = rng.uniform(0.2, 0.8, size=2)
        chan = 0.1 + 0.3 * xx * a + 0.2 * yy * b
        chan[h // 5: h // 2, w // 6: 2 * w // 3] += 0.3
        chan[(yy - 0.7) ** 2 + (xx - 0.65) ** 2 < 0.04] = 0.85 - 0.2 * i
        img[..., i] = chan
    return np.clip(img, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# BM3D


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_bm3d_reduces_error_on_piecewise_smooth_image(shape):
    x = piecewise_smooth(shape)
    y = x + 0.1 * np.random.default_rng(1).normal(size=shape).astype(np.float32)
    d = classical.bm3d_denoise(y, 0.1)
    assert d.shape == shape and d.dtype == np.float32
    assert d.min() >= 0.0 and d.max() <= 1.0
    # BM3D cuts the MSE of such images by far more than half at sigma = 0.1; demanding half
    # only fails if the denoiser does little or nothing.
    assert np.mean((d - x) ** 2) < 0.5 * np.mean((y - x) ** 2)


def test_bm3d_tiny_image_and_zero_sigma():
    # 8x8 crashes the bm3d package itself; the wrapper pads such images and crops back.
    x = piecewise_smooth((8, 8, 1))
    y = x + 0.1 * np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    d = classical.bm3d_denoise(jnp.asarray(y), 0.1)
    assert d.shape == (8, 8, 1) and np.all(np.isfinite(d))
    # on so small an image BM3D removes less (MSE ratio 0.54–0.83 over four noise draws), but
    # it must not add error; a crop off by one pixel leaves 2.8–3.8 times the noise's MSE
    assert np.mean((d - x) ** 2) < np.mean((y - x) ** 2)
    y[0, 0, 0], y[7, 7, 0] = -0.2, 1.3
    np.testing.assert_array_equal(classical.bm3d_denoise(y, 0.0), np.clip(y, 0, 1))
    assert classical.bm3d_denoise(y, 0.0)[7, 7, 0] == 1.0
    with pytest.raises(ValueError, match="y must be one image"):
        classical.bm3d_denoise(y[..., 0], 0.1)
    with pytest.raises(ValueError, match="sigma"):
        classical.bm3d_denoise(y, -0.1)


def test_bm3d_is_the_bm3d_package_on_grey_and_colour_images():
    """The wrapper passes σ (a standard deviation) as is, and denoises colour jointly
    (``bm3d_rgb``): the MSE test above also passes at 2σ, or channel by channel."""
    import bm3d

    for shape in ((20, 20, 1), (20, 20, 3)):
        x = piecewise_smooth(shape)
        y = x + 0.1 * np.random.default_rng(2).normal(size=shape)
        direct = (bm3d.bm3d_rgb(y, 0.1) if shape[-1] == 3 else bm3d.bm3d(y[..., 0], 0.1)[..., None])
        np.testing.assert_allclose(classical.bm3d_denoise(y, 0.1),
                                   np.clip(direct, 0, 1), atol=1e-6)  # float32 output


def test_bm3d_refuses_non_finite_pixels():
    y = piecewise_smooth((20, 20, 1))
    y[3, 4, 0] = np.nan  # it made every pixel of the output NaN
    with pytest.raises(ValueError, match="1 NaN or inf pixels"):
        classical.bm3d_denoise(y, 0.1)


# --------------------------------------------------------------------------------------------
# wavelets


@pytest.mark.filterwarnings("ignore:Level value")  # pywt: db4 filters longer than 8 pixels
@pytest.mark.parametrize("wavelet", ["db1", "db2", "db4"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (16, 8, 3)])
def test_wavelet_transform_is_orthonormal_and_matches_pywavelets(wavelet, shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    w = classical.wavelet_analysis(x, wavelet)
    level = classical.wavelet_max_level(shape, wavelet)
    assert level >= 1
    # float32 transforms of O(1) data: a few ulps per tap and level.
    np.testing.assert_allclose(classical.wavelet_synthesis(w, wavelet), x, atol=2e-5)
    assert float(jnp.sum(w**2)) == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)),
                                                 rel=1e-5)
    ref = np.stack([pywt.coeffs_to_array(pywt.wavedec2(
        x[..., c].astype(np.float64), wavelet, mode="periodization", level=level))[0]
        for c in range(shape[2])], axis=-1)
    np.testing.assert_allclose(w, ref, atol=2e-5)


def test_wavelet_level_validation():
    with pytest.raises(ValueError, match="even"):
        classical.wavelet_analysis(jnp.zeros((7, 8, 1)))
    with pytest.raises(ValueError, match="level=3"):
        classical.wavelet_analysis(jnp.zeros((12, 12, 1)), level=3)
    with pytest.raises(ValueError, match="wavelet"):
        classical.wavelet_analysis(jnp.zeros((8, 8, 1)), "bior2.2")


# --------------------------------------------------------------------------------------------
# Lasso


def test_power_iteration_estimates_operator_norm():
    op = gaussian(jax.random.PRNGKey(0), (10, 10, 1), 40)
    true = np.linalg.norm(np.asarray(op.matrix, np.float64), 2) ** 2
    est = float(classical.operator_norm_sq(op, iters=100))
    # a Rayleigh quotient never exceeds the top eigenvalue (float32 slack 1e-4); 100
    # iterations on a 100-dim problem get within a few percent.
    assert 0.95 * true < est <= true * (1 + 1e-4)


def _sparse_recovery(basis, key, shape=(16, 16, 1), m=100, k=8):
    n = int(np.prod(shape))
    rng = np.random.default_rng(int(key[-1]))
    w = np.zeros(n, np.float32)
    w[rng.choice(n, k, replace=False)] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    w = jnp.asarray(w.reshape(shape))
    x = (idctn(w, axes=(0, 1), norm="ortho") if basis == "dct"
         else classical.wavelet_synthesis(w))
    op = gaussian(key, shape, m)
    return x, op, op(x)


@pytest.mark.parametrize("basis", ["dct", "wavelet"])
def test_lasso_recovers_sparse_signal_from_fewer_measurements(basis):
    x, op, y = _sparse_recovery(basis, jax.random.PRNGKey(3))
    x_hat = classical.lasso_cs(y, op, basis=basis, lam=1e-3, iters=500)
    assert x_hat.shape == x.shape
    # 8-sparse in 256 dims from 100 Gaussian measurements is well inside the exact-recovery
    # regime; the only error left is the l1 shrinkage bias, of order lam / |coefficient|
    # ~ 1e-3 relative, so 2e-2 leaves a wide margin while a failed recovery is O(1).
    assert float(jnp.linalg.norm(x_hat - x) / jnp.linalg.norm(x)) < 2e-2


@pytest.mark.parametrize("basis", ["dct", "wavelet"])
def test_lasso_solves_the_documented_objective(x64, basis):
    r"""The minimiser of ``½‖AΨw − y‖² + λ‖w‖₁`` has ``max|Ψᵀ Aᵀ(y − AΨŵ)| = λ`` (its optimality
    condition, with ŵ ≠ 0): a λ off by the factor 2 of another convention reads 2 or ½ here,
    which the recovery test above cannot see (its error moves by ~1e-3 only)."""
    x, op, y = _sparse_recovery(basis, jax.random.PRNGKey(3))
    op = Dense(op.matrix.astype(jnp.float64), op.in_shape)
    lam = 1e-2
    x_hat = classical.lasso_cs(y.astype(jnp.float64), op, basis=basis, lam=lam, iters=3000)
    analysis = ((lambda v: jax.scipy.fft.dctn(v, axes=(0, 1), norm="ortho")) if basis == "dct"
                else classical.wavelet_analysis)
    correlation = analysis(op.A_adjoint(y - op.A(x_hat)))
    # FISTA after 3000 steps is within 1e-3 of the condition (measured 1.000)
    assert float(jnp.abs(correlation).max()) == pytest.approx(lam, rel=1e-2)


def test_lasso_runs_in_the_operators_dtype(x64):
    """float32 measurements with a float64 operator (x64 on) failed inside the solver's
    loop (its carry changed dtype)."""
    x, op, y = _sparse_recovery("dct", jax.random.PRNGKey(3))
    op64 = Dense(op.matrix.astype(jnp.float64), op.in_shape)
    x_hat = classical.lasso_cs(y.astype(jnp.float32), op64, lam=1e-3, iters=50)
    assert x_hat.dtype == jnp.float64


def test_lasso_vmaps_over_images_and_operators():
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    _, ops, ys = zip(*[_sparse_recovery("dct", k, shape=(8, 8, 1), m=40, k=3) for k in keys],
                     strict=True)
    ops = jax.tree.map(lambda *a: jnp.stack(a), *ops)
    batched = jax.vmap(lambda y, op: classical.lasso_cs(y, op, lam=1e-3, iters=200))(
        jnp.stack(ys), ops)
    for i in range(2):
        op_i = jax.tree.map(lambda a, i=i: a[i], ops)
        single = classical.lasso_cs(ys[i], op_i, lam=1e-3, iters=200)
        # The same float32 iteration, batched or not, with operations in a different order:
        # the power-iteration step size and each of the 200 FISTA steps add rounding of order
        # eps·‖x‖ ~ 1e-7, which accumulates (1.2e-5 measured with XLA's LLVM passes off,
        # tests/conftest.py); a mixed-up image or operator is off by O(0.1).
        np.testing.assert_allclose(batched[i], single, atol=5e-5)


def test_lasso_validation():
    op = gaussian(jax.random.PRNGKey(0), (8, 8, 1), 20)
    y = jnp.zeros(20)
    with pytest.raises(ValueError, match="basis"):
        classical.lasso_cs(y, op, basis="fourier")
    with pytest.raises(ValueError, match="y must have shape"):
        classical.lasso_cs(jnp.zeros(21), op)
    with pytest.raises(ValueError, match="lam"):
        classical.lasso_cs(y, op, lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        classical.lasso_cs(y, op, lam=jnp.asarray(-1.0))  # an array was not checked
    with pytest.raises(ValueError, match="NaN or inf"):
        classical.lasso_cs(y.at[3].set(jnp.nan), op)  # it returned an all-NaN image
    with pytest.raises(ValueError, match="basis='dct' takes neither"):
        classical.lasso_cs(y, op, level=2)  # it was ignored
    with pytest.raises(ValueError, match="iters"):
        classical.lasso_cs(y, op, iters=0)
    with pytest.raises(TypeError, match="op must be a linear operator"):
        classical.lasso_cs(y, object())


# --------------------------------------------------------------------------------------------
# Deep Decoder


def test_deep_decoder_shapes_and_fit():
    shape = (28, 28, 1)  # not a multiple of 2**3: generated at 32x32 and centre-cropped
    assert deep_decoder.input_shape(shape, 16, 3) == (4, 4, 16)
    x = jnp.asarray(piecewise_smooth(shape))
    op = gaussian(jax.random.PRNGKey(1), shape, 300)
    x_hat, losses = deep_decoder.deep_decoder_fit(jax.random.PRNGKey(0), op(x), op, k=16,
                                                  depth=3, steps=300, lr=0.01)
    assert x_hat.shape == shape and losses.shape == (300,)
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0
    assert bool(jnp.all(jnp.isfinite(losses)))
    # Adam on a smooth least-squares fit: the loss must at least halve in 300 steps.
    assert float(jnp.mean(losses[-10:])) < 0.5 * float(losses[0])
    x2 = deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), op(x), op, k=16, depth=3,
                                           steps=300, lr=0.01)
    np.testing.assert_array_equal(x2, x_hat)  # deterministic given the key
    x3 = deep_decoder.deep_decoder_recover(jax.random.PRNGKey(1), op(x), op, k=16, depth=3,
                                           steps=300, lr=0.01)
    assert not np.array_equal(x3, x_hat)  # the key is used


def test_deep_decoder_refuses_a_depth_that_makes_a_flat_image():
    """With ``2^depth >= H`` the random input is 1 pixel high, and upsampling it bilinearly
    gives an image constant along H whatever the weights (the experiment's 8x8 digits came
    out flat at depth 4)."""
    assert [deep_decoder.max_depth((s, s, 1)) for s in (2, 3, 8, 9, 28, 64, 65)] == \
        [0, 1, 2, 3, 4, 5, 6]
    op = gaussian(jax.random.PRNGKey(1), (28, 28, 1), 50)
    with pytest.raises(ValueError, match="depth=5 is too deep for images of 28x28.*depth <= 4"):
        deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), jnp.zeros(50), op, depth=5)
    tiny = gaussian(jax.random.PRNGKey(1), (2, 2, 1), 4)
    with pytest.raises(ValueError, match="2x2 are too small for a Deep Decoder"):
        deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), jnp.zeros(4), tiny, depth=1)


def test_the_experiments_deep_decoder_makes_images_that_are_not_flat():
    from experiments import compressed_sensing

    for shape in ((8, 8, 1), (28, 28, 1)):
        x = jnp.asarray(piecewise_smooth(shape))
        op = gaussian(jax.random.PRNGKey(1), shape, 40)
        x_hat = compressed_sensing._deep_decoder(jax.random.PRNGKey(0), op(x)[None], op, shape,
                                                 steps=5)[0]
        # random weights alone vary the image by ~0.1 along each axis; flat is 0 (< 1e-7)
        assert float(x_hat.std(axis=0).max()) > 1e-3 and float(x_hat.std(axis=1).max()) > 1e-3


def test_deep_decoder_takes_integer_measurements():
    op = gaussian(jax.random.PRNGKey(1), (8, 8, 1), 10)
    y = jnp.arange(10)  # it raised inside jax.random (an integer input dtype)
    x_int = deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), y, op, k=4, depth=2,
                                              steps=3)
    x_float = deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), y.astype(jnp.float32),
                                                op, k=4, depth=2, steps=3)
    np.testing.assert_array_equal(x_int, x_float)


def test_deep_decoder_validation():
    op = gaussian(jax.random.PRNGKey(1), (8, 8, 1), 10)
    with pytest.raises(ValueError, match="y must have shape"):
        deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), jnp.zeros(9), op)
    with pytest.raises(ValueError, match="depth"):
        deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), jnp.zeros(10), op, depth=0)
    with pytest.raises(ValueError, match="lr"):
        deep_decoder.deep_decoder_recover(jax.random.PRNGKey(0), jnp.zeros(10), op, lr=-1.0)


# --------------------------------------------------------------------------------------------
# DCGAN


@pytest.mark.parametrize("shape,start", [((28, 28, 1), (7, 7, 8)), ((64, 64, 3), (4, 4, 32))])
def test_dcgan_shapes_and_single_latent_matches_batch(shape, start):
    cfg = dcgan.DCGANConfig(shape, latent_dim=12, base_channels=4)
    assert cfg.start_shape == start
    params = dcgan.init_params(jax.random.PRNGKey(0), cfg)
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 12))
    one = jax.jit(lambda p, zz: dcgan.generator_apply(p, zz, image_shape=shape, latent_dim=12,
                                                      base_channels=4))(params["generator"], z[0])
    batch = dcgan.sample(params["generator"], jax.random.PRNGKey(1), 3, config=cfg)
    module = jax.jit(dcgan.Generator.from_config(cfg).apply)(params["generator"], z)
    assert one.shape == shape and batch.shape == module.shape == (3, *shape)
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    # sample() = vmap of generator_apply on the same z; per-sample normalisation makes it
    # equal to the images one by one and to the batched module (float32 rounding).
    np.testing.assert_allclose(batch[0], one, atol=1e-6)
    np.testing.assert_allclose(batch, module, atol=1e-6)
    logits = jax.jit(dcgan.Discriminator.from_config(cfg).apply)(params["discriminator"], batch)
    assert logits.shape == (3,)
    assert dcgan.DCGANConfig.from_dict(cfg.to_dict()) == cfg


def test_dcgan_paper_architecture_size():
    """The 64px generator, layer by layer: a bias-free projection of the 100-d latent to
    4×4×512, three bias-free 4×4 transposed convolutions halving the channels (512 → 64), a
    4×4 output convolution to 3 channels with a bias, and a LayerNorm (scale and bias) after
    the projection and each upsampling. Asim et al. report 3,576,804 weights for theirs (k0 =
    512), 97 more than this count; their normalisation and bias layout is not given, so the 97
    are not accounted for."""
    cfg = dcgan.DCGANConfig((64, 64, 3))
    assert cfg.start_shape == (4, 4, 512)
    params = jax.eval_shape(lambda: dcgan.init_params(jax.random.PRNGKey(0), cfg))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params["generator"]))
    by_layer = (100 * 4 * 4 * 512                               # project
                + 4 * 4 * (512 * 256 + 256 * 128 + 128 * 64)    # up1..up3
                + 4 * 4 * 64 * 3 + 3                            # out, with its bias
                + 2 * (512 + 256 + 128 + 64))                   # LayerNorms
    assert n == by_layer == 3_576_707


def test_dcgan_training_runs_and_is_deterministic():
    images = np.stack([piecewise_smooth((16, 16, 1), seed=s) for s in range(32)])
    kwargs = dict(latent_dim=8, base_channels=8, steps=40, batch_size=8, chunk=20,
                  progress=False)
    g1, hist = dcgan.train_dcgan(jax.random.PRNGKey(0), images, return_history=True, **kwargs)
    g2 = dcgan.train_dcgan(jax.random.PRNGKey(0), images, **kwargs)
    assert hist["d_loss"].shape == hist["g_loss"].shape == (40,)
    assert np.all(np.isfinite(hist["d_loss"])) and np.all(np.isfinite(hist["g_loss"]))
    # Against a freshly initialised generator the discriminator learns fast: its loss must
    # fall over the first steps (it would rise with a wrong gradient sign).
    assert hist["d_loss"][-10:].mean() < hist["d_loss"][:5].mean()
    jax.tree.map(np.testing.assert_array_equal, g1, g2)
    x = dcgan.generator_apply(g1, jnp.zeros(8), image_shape=(16, 16, 1), latent_dim=8,
                              base_channels=8)
    assert x.shape == (16, 16, 1)


def test_dcgan_r1_penalty_is_the_mean_squared_pixel_gradient_of_each_real_logit():
    cfg = dcgan.DCGANConfig((16, 16, 1), latent_dim=8, base_channels=4)
    params = dcgan.init_params(jax.random.PRNGKey(0), cfg)
    real = jnp.asarray(np.stack([piecewise_smooth((16, 16, 1), seed=s) for s in range(4)]))
    z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    loss = functools.partial(dcgan.discriminator_loss, params["discriminator"],
                             params["generator"], real, z, config=cfg)
    # one image at a time (the discriminator has no coupling across its batch)
    logit = lambda x: dcgan.discriminator_apply(params["discriminator"], x, config=cfg)
    sq_norms = jax.vmap(lambda x: jnp.sum(jax.grad(logit)(x) ** 2))(real)
    assert float(jnp.min(sq_norms)) > 0
    np.testing.assert_allclose(loss(r1=4.0) - loss(r1=0.0), 2.0 * jnp.mean(sq_norms),
                               rtol=1e-4)


def test_dcgan_validation():
    with pytest.raises(ValueError, match="image_shape"):
        dcgan.DCGANConfig((7, 7, 1))
    with pytest.raises(ValueError, match="latent_dim"):
        dcgan.DCGANConfig((8, 8, 1), latent_dim=0)
    cfg = dcgan.DCGANConfig((8, 8, 1), latent_dim=4, base_channels=4)
    params = dcgan.init_params(jax.random.PRNGKey(0), cfg)["generator"]
    with pytest.raises(ValueError, match="z must be one latent"):
        dcgan.generator_apply(params, jnp.zeros((2, 4)), image_shape=cfg)
    with pytest.raises(ValueError, match="images must have shape"):
        dcgan.train_dcgan(jax.random.PRNGKey(0), np.zeros((4, 8, 8, 3)), config=cfg, steps=1)
    with pytest.raises(ValueError, match="r1"):
        dcgan.train_dcgan(jax.random.PRNGKey(0), np.zeros((4, 8, 8, 1)), config=cfg, r1=-1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        dcgan.train_dcgan(jax.random.PRNGKey(0), np.full((4, 8, 8, 1), 2.0), config=cfg,
                          steps=1)


def test_imle_loss_is_the_mean_nearest_candidate_distance():
    cfg = dcgan.DCGANConfig((16, 16, 1), latent_dim=8, base_channels=4)
    g = dcgan.init_params(jax.random.PRNGKey(0), cfg)["generator"]
    images = jnp.asarray(np.stack([piecewise_smooth((16, 16, 1), seed=s) for s in range(3)]))
    z = jax.random.normal(jax.random.PRNGKey(1), (7, 8))
    loss, nearest = imle.imle_loss(g, images, z, config=cfg)
    samples = jax.vmap(lambda zz: dcgan.generator_apply(g, zz, image_shape=cfg))(z)
    # brute force: every image against every candidate
    dist = np.array([[np.mean((np.asarray(s) - np.asarray(x)) ** 2) for s in samples]
                     for x in images])
    np.testing.assert_array_equal(np.asarray(nearest), dist.argmin(axis=1))
    np.testing.assert_allclose(loss, dist.min(axis=1).mean(), rtol=1e-4)
    # the gradient flows only through the matched samples: unmatched latents do not matter
    unmatched = np.setdiff1d(np.arange(7), np.asarray(nearest))
    grad_z = jax.grad(lambda zz: imle.imle_loss(g, images, zz, config=cfg)[0])(z)
    assert unmatched.size and np.all(np.asarray(grad_z)[unmatched] == 0)


def test_imle_training_lowers_its_loss_and_is_deterministic():
    images = np.stack([piecewise_smooth((16, 16, 1), seed=s) for s in range(32)])
    cfg = dcgan.DCGANConfig((16, 16, 1), latent_dim=8, base_channels=8)
    kwargs = dict(config=cfg, steps=40, batch_size=8, candidates=32, chunk=20, progress=False)
    g1, hist = imle.train_imle(jax.random.PRNGKey(0), images, return_history=True, **kwargs)
    g2 = imle.train_imle(jax.random.PRNGKey(0), images, **kwargs)
    assert hist["loss"].shape == (40,) and np.all(np.isfinite(hist["loss"]))
    # a regression onto the nearest samples: the loss must fall (it would rise with a wrong
    # sign or a gradient through the wrong samples)
    assert hist["loss"][-10:].mean() < 0.7 * hist["loss"][:5].mean()
    jax.tree.map(np.testing.assert_array_equal, g1, g2)
    x = dcgan.generator_apply(g1, jnp.zeros(8), image_shape=cfg)
    assert x.shape == (16, 16, 1)


def test_imle_validation():
    cfg = dcgan.DCGANConfig((8, 8, 1), latent_dim=4, base_channels=4)
    images = np.full((4, 8, 8, 1), 0.5)
    with pytest.raises(ValueError, match="candidates must be >= batch_size"):
        imle.train_imle(jax.random.PRNGKey(0), images, config=cfg, batch_size=8, candidates=4)
    with pytest.raises(ValueError, match="lr"):
        imle.train_imle(jax.random.PRNGKey(0), images, config=cfg, lr=0.0)
    with pytest.raises(ValueError, match="images must have shape"):
        imle.train_imle(jax.random.PRNGKey(0), np.zeros((4, 8, 8, 3)), config=cfg)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        imle.train_imle(jax.random.PRNGKey(0), images + 1.0, config=cfg)
    with pytest.raises(TypeError, match="DCGANConfig"):
        imle.train_imle(jax.random.PRNGKey(0), images, config=(8, 8, 1))
    from flowinv import priors

    with pytest.raises(ValueError, match="method must be"):
        priors.GANConfig(dataset="mnist", image_shape=(28, 28, 1), method="wgan")
