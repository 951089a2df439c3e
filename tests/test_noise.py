"""Tests of flowinv.noise: densities against scipy, sampling statistics, Whang et al.'s std maps,
the flow-based noise model (with a stand-in flow of known density), validation."""

from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowinv import noise


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, restoring the previous setting afterwards."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# --------------------------------------------------------------------------------------------
# Gaussian densities


def test_gaussian_log_prob_matches_scipy(x64):
    rng = np.random.default_rng(0)
    delta = rng.normal(size=(6, 5, 3)) * 0.4
    nz = noise.gaussian(0.3)
    ref = stats.norm.logpdf(delta, loc=0.0, scale=0.3).sum()
    # float64 on both sides: agreement to rounding of a 90-term sum (~1e-14 relative).
    np.testing.assert_allclose(float(nz.log_prob(jnp.asarray(delta))), ref, rtol=1e-12)


def test_diagonal_gaussian_with_mean_matches_scipy(x64):
    rng = np.random.default_rng(1)
    std = rng.uniform(0.05, 2.0, size=(4, 7, 2))
    mean = rng.normal(size=(4, 7, 2))
    delta = rng.normal(size=(4, 7, 2))
    nz = noise.diagonal_gaussian(std, mean=mean)
    ref = stats.norm.logpdf(delta, loc=mean, scale=std).sum()
    np.testing.assert_allclose(float(nz.log_prob(jnp.asarray(delta))), ref, rtol=1e-12)
    # A mean broadcast along an axis (one value per row).
    row_mean = rng.normal(size=(4, 1, 1))
    nz = noise.diagonal_gaussian(std, mean=row_mean)
    ref = stats.norm.logpdf(delta, loc=row_mean, scale=std).sum()
    np.testing.assert_allclose(float(nz.log_prob(jnp.asarray(delta))), ref, rtol=1e-12)


def test_float32_log_prob_close_to_scipy():
    rng = np.random.default_rng(2)
    delta = rng.normal(size=(50,)).astype(np.float32)
    nz = noise.gaussian(0.7)
    ref = stats.norm.logpdf(delta.astype(np.float64), scale=0.7).sum()
    # float32 sum of 50 terms of size ~1: relative error ~ 50 * 6e-8 ~ 3e-6 at worst.
    np.testing.assert_allclose(float(nz.log_prob(jnp.asarray(delta))), ref, rtol=1e-5)


def test_gaussian_sample_statistics():
    sigma, shape = 0.3, (200, 100)
    raw = noise.gaussian(sigma).sample(jax.random.PRNGKey(3), shape)
    assert raw.shape == shape and raw.dtype == jnp.float32
    d = np.asarray(raw, np.float64)
    count = d.size
    # 5 standard errors (false-failure probability < 1e-6): mean has std sigma/sqrt(count),
    # the sample variance has relative std sqrt(2/(count-1)) (1% here).
    assert abs(d.mean()) < 5 * sigma / math.sqrt(count)
    assert abs(d.var(ddof=1) / sigma**2 - 1) < 5 * math.sqrt(2 / (count - 1))


def test_diagonal_sample_statistics():
    rng = np.random.default_rng(4)
    std = rng.uniform(0.1, 3.0, size=(8, 4)).astype(np.float32)
    mean = rng.normal(size=(8, 4)).astype(np.float32)
    nz = noise.diagonal_gaussian(std, mean=mean)
    draws = 500
    keys = jax.random.split(jax.random.PRNGKey(5), draws)
    d = np.asarray(jax.vmap(lambda k: nz.sample(k))(keys), np.float64)
    assert d.shape == (draws, 8, 4)
    z = (d - mean) / std  # standardised: i.i.d. N(0, 1) if std and mean are applied per entry
    count = z.size
    assert abs(z.mean()) < 5 / math.sqrt(count)
    assert abs(z.var(ddof=1) - 1) < 5 * math.sqrt(2 / (count - 1))
    # Per-entry check with power: entries whose std is 30x apart must not look alike.
    per_entry_sd = d.std(axis=0, ddof=1)
    # With 500 draws the sample std of one entry is within ~3.2% (1 s.e.) of the truth; 25%
    # is > 7 standard errors.
    np.testing.assert_allclose(per_entry_sd, std, rtol=0.25)


def test_cs_gaussian_rms():
    m, rms = 50, 0.1
    nz = noise.cs_gaussian(m, rms=rms)
    assert nz.std.shape == (m,)
    np.testing.assert_allclose(np.asarray(nz.std), rms / math.sqrt(m), rtol=1e-6)
    draws = 2000
    keys = jax.random.split(jax.random.PRNGKey(6), draws)
    sq = np.asarray(jax.vmap(lambda k: jnp.sum(nz.sample(k, (m,)) ** 2))(keys), np.float64)
    # ||eta||^2 / sigma^2 ~ chi^2_m: E||eta||^2 = rms^2, Var = 2 m sigma^4 = 2 rms^4 / m.
    stderr = rms**2 * math.sqrt(2 / m) / math.sqrt(draws)
    assert abs(sq.mean() - rms**2) < 5 * stderr
    assert abs(math.sqrt(sq.mean()) - 0.1) < 0.005  # the paper's sqrt(E||eta||^2) = 0.1


def test_vmapped_noise_levels():
    sigmas = jnp.array([0.1, 0.5, 2.0])
    deltas = jax.random.normal(jax.random.PRNGKey(7), (3, 10))
    lp = jax.jit(jax.vmap(lambda s, d: noise.gaussian(s).log_prob(d)))(sigmas, deltas)
    for i, s in enumerate(np.asarray(sigmas)):
        ref = stats.norm.logpdf(np.asarray(deltas[i], np.float64), scale=s).sum()
        np.testing.assert_allclose(float(lp[i]), ref, rtol=1e-5)
    # Noise models are pytrees: pass through jit as arguments.
    nz = noise.gaussian(0.5)
    np.testing.assert_allclose(jax.jit(lambda n, d: n.log_prob(d))(nz, deltas[0]),
                               nz.log_prob(deltas[0]), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Whang et al. recipes


def test_sinusoidal_std_map():
    shape = (64, 64, 3)
    nz = noise.sinusoidal(shape)
    std = np.asarray(nz.std)
    assert std.shape == shape
    k = np.arange(64)
    # sigma(k) ∝ exp(sin(2 pi k / 16)), normalised to a maximum of 1: the maximum of
    # exp(sin(.)) on the grid is e (at k = 4 mod 16).
    expected = np.exp(np.sin(2 * np.pi * k / 16) - 1.0)
    np.testing.assert_allclose(std[:, 0, 0], expected, rtol=1e-6)
    assert np.all(std == std[:, :1, :1])  # one value per row, over columns and channels
    np.testing.assert_allclose(std.max(), 1.0, rtol=1e-7)
    np.testing.assert_allclose(std.min(), math.exp(-2), rtol=1e-6)  # unclamped at the floor
    np.testing.assert_allclose(std[:48], std[16:], rtol=1e-6)  # period 16 rows
    assert np.all(np.asarray(nz.mean) == 0)
    # Coefficient: the whole map scales with it.
    np.testing.assert_allclose(np.asarray(noise.sinusoidal(shape, scale=0.25).std),
                               0.25 * std, rtol=1e-6)


def test_sinusoidal_clamping_axis_and_1d():
    shape = (32, 8, 1)
    raw = np.asarray(noise.sinusoidal(shape, scale=2.0).std)
    clamped = np.asarray(noise.sinusoidal(shape, scale=2.0, min_std=0.5, max_std=1.2).std)
    np.testing.assert_allclose(clamped, np.clip(raw, 0.5, 1.2), rtol=1e-7)
    assert clamped.max() == pytest.approx(1.2) and clamped.min() == pytest.approx(0.5)
    assert (raw > 1.2).any() and (raw < 0.5).any()  # the clamp is active on both sides
    cols = np.asarray(noise.sinusoidal((4, 32, 1), axis=1).std)
    np.testing.assert_allclose(cols[0, :, 0], raw[:, 0, 0] / 2.0, rtol=1e-6)
    np.testing.assert_array_equal(noise.sinusoidal((4, 32, 1), axis=np.int64(1)).std, cols)
    one_d = noise.sinusoidal((40,))
    np.testing.assert_allclose(np.asarray(one_d.std)[:32], raw[:, 0, 0] / 2.0, rtol=1e-6)


def test_positive_mean_sinusoidal():
    m = 64
    nz = noise.positive_mean_sinusoidal((m,), scale=0.5)
    assert np.all(np.asarray(nz.mean) > 0)
    np.testing.assert_allclose(float(nz.mean), 0.5)
    np.testing.assert_allclose(np.asarray(nz.std), np.asarray(noise.sinusoidal((m,),
                               scale=0.5).std))
    assert float(noise.positive_mean_sinusoidal((m,), shift=0.2).mean) == pytest.approx(0.2)
    draws = 400
    keys = jax.random.split(jax.random.PRNGKey(8), draws)
    d = np.asarray(jax.vmap(lambda k: nz.sample(k))(keys), np.float64)
    # Mean of 25,600 entries with std <= 0.5: standard error <= 0.0031; 5 s.e. = 0.016.
    assert abs(d.mean() - 0.5) < 0.016
    rng = np.random.default_rng(9)
    delta = rng.normal(size=m)
    ref = stats.norm.logpdf(delta, loc=0.5, scale=np.asarray(nz.std, np.float64)).sum()
    np.testing.assert_allclose(float(nz.log_prob(jnp.asarray(delta, jnp.float32))), ref,
                               rtol=1e-5)


def test_radial_std_map():
    shape = (64, 64, 3)
    std = np.asarray(noise.radial(shape).std)
    assert std.shape == shape
    assert np.all(std == std[:, :, :1])  # constant over channels
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    d2 = (rows - 31) ** 2 + (cols - 31) ** 2  # centre pixel (31, 31) as in Whang et al. B.1
    # sigma(d) = exp(-0.005 d^2), floored at the documented default 1e-3 * scale.
    np.testing.assert_allclose(std[:, :, 0], np.clip(np.exp(-0.005 * d2), 1e-3, None),
                               rtol=1e-6)
    assert std[31, 31, 0] == 1.0 and std.max() == 1.0
    np.testing.assert_allclose(std[31, 41, 0], math.exp(-0.5), rtol=1e-6)
    assert std.min() == pytest.approx(1e-3)  # the floor is active in the corners
    custom = np.asarray(noise.radial((9, 9, 1), scale=2.0, decay=0.1, center=(0, 0),
                                     min_std=0.05, max_std=1.5).std)[:, :, 0]
    r2, c2 = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    np.testing.assert_allclose(custom, np.clip(2.0 * np.exp(-0.1 * (r2**2 + c2**2)), 0.05, 1.5),
                               rtol=1e-6)


def test_radial_large_image_stays_finite():
    # Unclamped, float32 exp(-0.005 d^2) underflows to 0 in the corners of 256x256 images.
    nz = noise.radial((256, 256, 1))
    assert float(jnp.min(nz.std)) > 0
    delta = nz.sample(jax.random.PRNGKey(10))
    assert bool(jnp.isfinite(nz.log_prob(delta)))


# --------------------------------------------------------------------------------------------
# flow-based noise, with a stand-in flow of known density


@dataclasses.dataclass(frozen=True)
class AffineFlow:
    """Stand-in flow following the flowinv contract: x = exp(log_a) * z + b elementwise,
    z ~ N(0, I), so x ~ N(b, exp(log_a)^2) per entry."""

    image_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return math.prod(self.image_shape)

    def init(self, key, x_batch):
        del x_batch
        ka, kb = jax.random.split(key)
        return {"log_a": 0.3 * jax.random.normal(ka, self.image_shape),
                "b": jax.random.normal(kb, self.image_shape)}

    def forward(self, params, z):
        x = jnp.exp(params["log_a"]) * z.reshape(self.image_shape) + params["b"]
        return x, jnp.sum(params["log_a"])

    def inverse(self, params, x):
        z = ((x - params["b"]) * jnp.exp(-params["log_a"])).reshape(-1)
        return z, -jnp.sum(params["log_a"])

    def log_prob(self, params, x):
        z, logdet = self.inverse(params, x)
        return jnp.sum(jax.scipy.stats.norm.logpdf(z)) + logdet

    def sample(self, params, key, temperature=1.0):
        z = temperature * jax.random.normal(key, (self.dim,))
        return self.forward(params, z)[0]


def _affine_flow():
    flow = AffineFlow((4, 3, 2))
    params = flow.init(jax.random.PRNGKey(11), jnp.zeros((1, 4, 3, 2)))
    return flow, params


def test_flow_noise_change_of_variables():
    flow, params = _affine_flow()
    scale, offset = 0.2, 0.5
    nz = noise.flow_noise(flow, params, scale=scale, offset=offset)
    a, b = np.exp(np.asarray(params["log_a"], np.float64)), np.asarray(params["b"], np.float64)
    # delta = offset + scale * (a z + b)  ~  N(offset + scale b, (scale a)^2) per entry.
    loc, sd = offset + scale * b, scale * a
    delta = np.random.default_rng(12).normal(loc, sd)
    ref = stats.norm.logpdf(delta, loc=loc, scale=sd).sum()
    lp = float(nz.log_prob(jnp.asarray(delta, jnp.float32)))
    # float32 evaluation of a 24-term sum of O(1..10) terms: absolute error ~1e-5.
    np.testing.assert_allclose(lp, ref, rtol=1e-5, atol=1e-4)
    # Without the -n log(scale) term the value would be off by 24 * log(0.2) ~ -38.6.
    assert abs(lp - float(flow.log_prob(params, (jnp.asarray(delta) - offset) / scale))) > 30
    # Through jit, with the flow as static metadata and params as leaves.
    lp_jit = jax.jit(lambda n, d: n.log_prob(d))(nz, jnp.asarray(delta, jnp.float32))
    # Two float32 evaluations of the same sum (fused or op by op), each within ~1e-5 of it.
    np.testing.assert_allclose(float(lp_jit), lp, rtol=0, atol=2e-5)


def test_flow_noise_sample_statistics():
    flow, params = _affine_flow()
    nz = noise.flow_noise(flow, params, scale=0.2, offset=0.5)
    draws = 2000
    keys = jax.random.split(jax.random.PRNGKey(13), draws)
    d = np.asarray(jax.vmap(lambda k: nz.sample(k, flow.image_shape))(keys), np.float64)
    assert d.shape == (draws, *flow.image_shape)
    a, b = np.exp(np.asarray(params["log_a"], np.float64)), np.asarray(params["b"], np.float64)
    z = (d - (0.5 + 0.2 * b)) / (0.2 * a)  # i.i.d. N(0, 1) if sampling matches the density
    count = z.size
    assert abs(z.mean()) < 5 / math.sqrt(count)
    assert abs(z.var(ddof=1) - 1) < 5 * math.sqrt(2 / (count - 1))
    # temperature scales the latent
    cold = np.asarray(jax.vmap(lambda k: nz.sample(k, temperature=0.0))(keys[:3]))
    np.testing.assert_allclose(cold, np.broadcast_to(0.5 + 0.2 * b, cold.shape), rtol=1e-6)


def test_flow_noise_sample_refuses_a_per_image_model_drawn_as_one():
    """A FlowNoise built per image (vmapped over its scale) carries a leading batch axis; one
    draw with the default shape must say so, as log_prob and sample(key, shape) do, rather
    than broadcast the batch's scales into a draw of another shape."""
    flow, params = _affine_flow()
    batched = jax.vmap(lambda s: noise.flow_noise(flow, params, scale=s))(jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="per_image_noise"):
        batched.sample(jax.random.PRNGKey(0))
    one = jax.tree_util.tree_map(lambda a: a[0], batched)
    assert one.sample(jax.random.PRNGKey(0)).shape == tuple(flow.image_shape)


# --------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "call,arg",
    [
        (lambda: noise.gaussian(0.0), "sigma"),
        (lambda: noise.gaussian(-1.0), "sigma"),
        (lambda: noise.gaussian(float("nan")), "sigma"),
        (lambda: noise.gaussian(np.ones(3)), "sigma"),
        # finite and > 0 as a Python float, but 0 and inf in float32
        (lambda: noise.gaussian(1e-50), "sigma"),
        (lambda: noise.gaussian(1e39), "sigma"),
        (lambda: noise.diagonal_gaussian(np.array([1.0, 0.0])), "std_map"),
        (lambda: noise.diagonal_gaussian(np.array([1.0, -2.0])), "std_map"),
        (lambda: noise.diagonal_gaussian(np.ones((3, 4)), mean=np.ones(3)), "mean"),
        # broadcastable with the map, but not to it: the noise would be (8, 8, 3)
        (lambda: noise.diagonal_gaussian(np.ones((8, 8, 1)), mean=np.zeros(3)), "mean"),
        (lambda: noise.cs_gaussian(0), "m"),
        (lambda: noise.cs_gaussian(10, rms=-0.1), "rms"),
        (lambda: noise.sinusoidal((8, 8, 1), scale=0.0), "scale"),
        (lambda: noise.sinusoidal((8, 8, 1), period=0.0), "period"),
        (lambda: noise.sinusoidal((8, 8, 1), axis=3), "axis"),
        (lambda: noise.sinusoidal((8, 8, 1), axis=True), "axis"),
        (lambda: noise.sinusoidal((8, 8, 1), min_std=0.0), "min_std"),
        (lambda: noise.sinusoidal((8, 8, 1), min_std=0.5, max_std=0.1), "max_std"),
        (lambda: noise.sinusoidal((8, 0, 1)), "shape"),
        (lambda: noise.positive_mean_sinusoidal((8,), shift=-1.0), "shift"),
        (lambda: noise.radial((8, 8)), "shape"),
        (lambda: noise.radial((8, 8, 1), decay=-1.0), "decay"),
        (lambda: noise.radial((8, 8, 1), center=(1, 2, 3)), "center"),
        (lambda: noise.gaussian(0.1).sample(jax.random.PRNGKey(0)), "shape"),
        (lambda: noise.sinusoidal((8, 4, 1)).sample(jax.random.PRNGKey(0), (4, 4, 1)), "shape"),
        (lambda: noise.sinusoidal((8, 4, 1)).log_prob(jnp.zeros((8, 5, 1))), "delta"),
        (lambda: noise.flow_noise(_affine_flow()[0], _affine_flow()[1], scale=0.0), "scale"),
        (lambda: noise.flow_noise(_affine_flow()[0], _affine_flow()[1], scale=1e-50), "scale"),
        (lambda: noise.flow_noise(_affine_flow()[0], _affine_flow()[1], offset=float("nan")),
         "offset"),
        (lambda: noise.from_log_prob(lambda d: jnp.sum(d), (2, 3, 1),
                                     sample=lambda k: jnp.zeros((2, 3, 1), jnp.int32)),
         "sample"),
        (lambda: noise.flow_noise(_affine_flow()[0], _affine_flow()[1], offset=np.ones(5)),
         "offset"),
        (lambda: noise.flow_noise(object(), {}), "flow"),
        (lambda: noise.flow_noise(*_affine_flow()).log_prob(jnp.zeros((4, 3, 1))), "delta"),
    ],
)
def test_bad_inputs_raise(call, arg):
    """The error names the argument at fault, as a word ("m" is not the m of "must")."""
    with pytest.raises(ValueError, match=rf"\b{re.escape(arg)}\b"):
        call()


# --------------------------------------------------------------------------------------------
# a density of the user's own (from_log_prob)


def _laplace_log_prob(delta, b):
    return jnp.sum(-jnp.abs(delta) / b - jnp.log(2.0 * b))


def _laplace_sample(key, b):
    return b * jax.random.laplace(key, (6, 5, 3))


def test_from_log_prob_laplace_matches_scipy_and_samples(x64):
    lap = noise.from_log_prob(_laplace_log_prob, (6, 5, 3), params=jnp.asarray(0.2),
                              sample=_laplace_sample)
    delta = np.random.default_rng(1).laplace(scale=0.2, size=(6, 5, 3))
    ref = stats.laplace.logpdf(delta, scale=0.2).sum()
    np.testing.assert_allclose(float(lap.log_prob(jnp.asarray(delta))), ref, rtol=1e-12)
    draws = jax.vmap(lap.sample)(jax.random.split(jax.random.PRNGKey(2), 400))  # 36,000 entries
    assert draws.shape == (400, 6, 5, 3)
    # E|δ| = b = 0.2 with std 0.2 per entry: the mean of 36,000 has std 0.001; 5 sigma = 0.005.
    assert abs(float(jnp.abs(draws).mean()) - 0.2) < 0.005
    # per-image noise levels: the construction vmapped over params
    scales = jnp.asarray([0.1, 0.2, 0.4])
    models = jax.vmap(lambda b: noise.from_log_prob(_laplace_log_prob, (6, 5, 3), params=b))(
        scales)
    per_image = jax.vmap(lambda m: m.log_prob(jnp.asarray(delta)))(models)
    for b, lp in zip(scales, per_image, strict=True):
        np.testing.assert_allclose(float(lp), stats.laplace.logpdf(delta, scale=float(b)).sum(),
                                   rtol=1e-12)


@pytest.mark.parametrize(
    "log_prob,sample,words",
    [
        (lambda d: d, None, "one real scalar"),
        (lambda d: jnp.sum(d.reshape(7)), None, "fails on a delta"),
        (lambda d: jnp.sum(d) > 0, None, "one real scalar"),
        (lambda d: jnp.sum(d), lambda key: jnp.zeros(3), "sample must return"),
        (lambda d: jnp.sum(d), lambda key: key.reshape(5), "sample fails"),
    ],
    ids=["not-scalar", "fails", "bool", "sample-shape", "sample-fails"],
)
def test_from_log_prob_rejects_what_it_cannot_serve(log_prob, sample, words):
    with pytest.raises(ValueError, match=words):
        noise.from_log_prob(log_prob, (2, 3, 1), sample=sample)


def test_from_log_prob_bad_arguments():
    with pytest.raises(TypeError, match="log_prob must be callable"):
        noise.from_log_prob(None, (2, 3, 1))
    with pytest.raises(TypeError, match="sample must be callable"):
        noise.from_log_prob(lambda d: jnp.sum(d), (2, 3, 1), sample=3)
    no_sampler = noise.from_log_prob(lambda d: jnp.sum(d), (2, 3, 1))
    with pytest.raises(ValueError, match="no sampler"):
        no_sampler.sample(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="delta must have shape"):
        no_sampler.log_prob(jnp.zeros((3, 2, 1)))


def _laplace_like(delta, b):
    return -jnp.sum(jnp.abs(delta)) / b


@pytest.mark.parametrize("build", [
    noise.gaussian,
    lambda s: noise.diagonal_gaussian(s),
    lambda s: noise.diagonal_gaussian(jnp.full((2, 3, 1), 0.1), mean=s),
    lambda s: noise.from_log_prob(_laplace_like, (2, 3, 1), params=s),
], ids=["gaussian", "diagonal-std", "diagonal-mean", "from-log-prob"])
def test_a_python_float_and_a_float32_scalar_share_one_compilation(build):
    """jit keys its cache on weak types too: a model built from 0.1 and one built from
    jnp.float32(0.2) (with the same function object) must trace a jitted solve once, not
    twice."""
    traces = []

    @jax.jit
    def objective(model):
        traces.append(None)
        return model.log_prob(jnp.full((2, 3, 1), 0.05))

    objective(build(0.1))
    objective(build(jnp.float32(0.2)))
    assert len(traces) == 1
