"""Tests of flowinv.operators: adjoints, statistics, vmapped per-image operators, validation."""

from __future__ import annotations

import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.measure import block_reduce

from flowinv import operators as ops

SHAPE = (8, 4, 2)  # n = 64, a power of two so that every transform applies
N = math.prod(SHAPE)
ODD = (5, 3, 3)  # n = 45: the DCT path at a size that is not a power of two


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, restoring the previous setting afterwards."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


_K = [jax.random.PRNGKey(i) for i in range(6)]


def _blur(x, kernel):
    """A per-channel 'same' convolution: a linear operator of our own for from_function."""
    return jnp.stack([jax.scipy.signal.convolve2d(x[..., c], kernel, mode="same")
                      for c in range(x.shape[-1])], axis=-1)


def _matmul(x, a):
    return a @ x.reshape(-1)

# Every linear operator of the module, as factories of the float dtype of their leaves.
LINEAR = {
    "identity": lambda dt: ops.identity(SHAPE),
    "gaussian_cs": lambda dt: ops.gaussian_cs(_K[1], SHAPE, 40, dtype=dt),
    "matrix_operator": lambda dt: ops.matrix_operator(
        jax.random.normal(_K[2], (7, N), dt), SHAPE),
    "fast_cs_dct": lambda dt: ops.fast_cs(_K[3], SHAPE, 40, dtype=dt),
    "fast_cs_dct_odd_n": lambda dt: ops.fast_cs(_K[3], ODD, 20, dtype=dt),
    "fast_cs_dct_m_eq_n": lambda dt: ops.fast_cs(_K[3], SHAPE, N, dtype=dt),
    "fast_cs_hadamard": lambda dt: ops.fast_cs(_K[4], SHAPE, 30, transform="hadamard",
                                               dtype=dt),
    "inpainting_2d_mask": lambda dt: ops.inpainting(
        np.asarray(jax.random.bernoulli(_K[0], 0.5, SHAPE[:2])), SHAPE),
    "inpainting_box": lambda dt: ops.inpainting(ops.center_box_mask(SHAPE, 3)),
    "inpainting_random": lambda dt: ops.inpainting(ops.random_mask(_K[5], SHAPE, 0.6)),
    "subpixel": lambda dt: ops.subpixel(_K[5], SHAPE, 0.25),
    "downsample": lambda dt: ops.downsample(SHAPE, 2),
    "from_function_blur": lambda dt: ops.from_function(
        _blur, SHAPE, params=jax.random.uniform(_K[1], (3, 3), dt), linear=True),
    "from_function_subsample": lambda dt: ops.from_function(
        lambda x: 2.0 * x[::2, 1:], SHAPE, linear=True),
}


@pytest.mark.parametrize("name", list(LINEAR))
def test_adjoint_float64(name, x64):
    op = LINEAR[name](jnp.float64)
    errs = [float(ops.adjoint_check(op, jax.random.PRNGKey(10 + i))) for i in range(3)]
    # In float64 the two inner products agree to rounding: each is a sum of <= n = 64 products
    # (the DCT/Hadamard paths add O(log n) rounding steps), so the error relative to the
    # Cauchy-Schwarz bound is at most ~ n * eps = 64 * 2.2e-16 ~ 1.4e-14. 1e-12 leaves margin
    # for that, while a wrong adjoint gives ~ 1/sqrt(n) or more (see
    # test_adjoint_check_detects_wrong_adjoint).
    assert max(errs) < 1e-12, (name, errs)

    # Dense check: the adjoint equals the transpose of the operator's own Jacobian.
    n_in, n_out = math.prod(op.in_shape), math.prod(op.out_shape)
    jac = jax.jit(jax.jacfwd(op))(jnp.zeros(op.in_shape, jnp.float64)).reshape(n_out, n_in)
    jac_t = jax.jit(jax.jacfwd(op.A_adjoint))(jnp.zeros(op.out_shape, jnp.float64))
    # Pure float64 rounding again (entries are sums of <= n products of O(1) numbers).
    np.testing.assert_allclose(jac_t.reshape(n_in, n_out), jac.T, atol=1e-12)


@pytest.mark.parametrize("name", list(LINEAR))
def test_shapes_and_A_alias(name):
    op = LINEAR[name](jnp.float32)
    assert op.is_linear
    x = jax.random.uniform(jax.random.PRNGKey(1), op.in_shape)
    y = op(x)
    assert y.shape == tuple(op.out_shape)
    np.testing.assert_array_equal(op.A(x), y)
    assert op.A_adjoint(y).shape == tuple(op.in_shape)
    # Operators are pytrees: they pass through jit as arguments.
    np.testing.assert_allclose(jax.jit(lambda o, v: o(v))(op, x), y, rtol=1e-6, atol=1e-6)


def test_gaussian_cs_entry_statistics():
    m, shape = 50, (16, 16, 1)
    a = np.asarray(ops.gaussian_cs(jax.random.PRNGKey(3), shape, m).matrix, np.float64)
    assert a.shape == (m, 256)
    count = a.size  # 12,800 i.i.d. N(0, 1/m) entries
    # The sample mean has std sqrt(1/m / count) and the sample variance has std
    # (1/m) sqrt(2 / (count - 1)) (about 1.25% relative). Bounds at 5 standard errors fail
    # by chance with probability < 1e-6, while a wrong variance (e.g. 1/n or 1) is far outside.
    assert abs(a.mean()) < 5 * math.sqrt(1 / m / count)
    assert abs(a.var(ddof=1) * m - 1) < 5 * math.sqrt(2 / (count - 1))


@pytest.mark.parametrize("transform,shape", [("dct", ODD), ("hadamard", SHAPE)])
def test_fast_cs_rows_orthogonal(transform, shape):
    """A A^T = (n/m) I exactly: rows of a subsampled orthonormal transform, scaled."""
    n, m = math.prod(shape), 20
    op = ops.fast_cs(jax.random.PRNGKey(4), shape, m, transform=transform)
    jac = jax.jit(jax.jacfwd(op))(jnp.zeros(shape)).reshape(m, n)
    # float32 transforms of length <= 64: entries of A A^T are accurate to ~√n·ε₃₂ ≈ 1e-6
    # relative (measured: 3.2e-7 (DCT) and 6.0e-7 (Hadamard) of n/m); a wrong normalisation
    # or a repeated row is off by O(1).
    np.testing.assert_allclose(jac @ jac.T, (n / m) * np.eye(m), atol=1e-5 * n / m)


def test_fast_cs_draws_its_rows_uniformly():
    """The m rows are a random subset, not a fixed one (a fixed set passes every other check:
    the random signs alone keep E‖Ax‖² = ‖x‖²). Over 400 keys each of the n = 64 rows is drawn
    Binomial(400, 16/64) times, mean 100 and sd 8.7: [50, 150] is 5.7 sd, so a false failure
    over 64 rows has probability ~1e-7, while the first 16 rows always would give 400."""
    keys = jax.random.split(jax.random.PRNGKey(8), 400)
    counts = np.zeros(64, int)
    for k in keys:
        counts[np.asarray(ops.fast_cs(k, SHAPE, 16).rows)] += 1
    assert counts.sum() == 400 * 16
    assert counts.min() >= 50 and counts.max() <= 150, (counts.min(), counts.max())


def test_fast_cs_norm_preserved_on_average():
    """E ||A x||^2 = ||x||^2 over the random signs and rows (same normalisation as Gaussian)."""
    shape, m, draws = SHAPE, 30, 400
    x = jax.random.uniform(jax.random.PRNGKey(5), shape)
    keys = jax.random.split(jax.random.PRNGKey(6), draws)
    ratios = jax.vmap(lambda k: jnp.sum(ops.fast_cs(k, shape, m)(x) ** 2))(keys)
    ratios = np.asarray(ratios, np.float64) / float(jnp.sum(x**2))
    # z-test: the mean of `draws` i.i.d. ratios with expectation 1 lies within 5 standard errors
    # (estimated from the draws themselves) except with probability < 1e-6.
    stderr = ratios.std(ddof=1) / math.sqrt(draws)
    assert abs(ratios.mean() - 1.0) < 5 * stderr
    # ...and the test has power: a missing sqrt(n/m) factor would give a mean of m/n ~ 0.2.
    assert 5 * stderr < 0.2


def test_fast_cs_large_never_materialises_matrix():
    shape = (256, 256, 3)
    n = math.prod(shape)
    m = n // 5
    t0 = time.perf_counter()
    op = ops.fast_cs(jax.random.PRNGKey(7), shape, m)
    leaves = jax.tree_util.tree_leaves(op)
    # O(n) storage: the sign vector (n) and the row indices (m); an m x n matrix would be
    # 7.7e9 entries.
    assert sum(leaf.size for leaf in leaves) == n + m
    assert op.rows.dtype == jnp.int32
    x = jax.random.uniform(jax.random.PRNGKey(8), shape)
    y = jax.jit(lambda o, v: o(v))(op, x)
    xt = jax.jit(lambda o, v: o.A_adjoint(v))(op, y)
    jax.block_until_ready(xt)
    assert y.shape == (m,) and xt.shape == shape
    # A^T A is the projection D T^T S^T S T D scaled by n/m, so <x, A^T A x> = ||A x||^2.
    np.testing.assert_allclose(float(jnp.vdot(x, xt)), float(jnp.sum(y**2)), rtol=1e-4)
    assert time.perf_counter() - t0 < 30.0  # seconds, generous for a 2-core CPU


def test_fast_cs_rows_distinct_and_in_range():
    op = ops.fast_cs(jax.random.PRNGKey(9), SHAPE, 50)
    rows = np.asarray(op.rows)
    assert len(np.unique(rows)) == 50 and rows.min() >= 0 and rows.max() < N
    assert set(np.unique(np.asarray(op.signs))) == {-1.0, 1.0}


def test_one_bit_forward_and_straight_through_gradient():
    op = ops.one_bit_cs(jax.random.PRNGKey(11), SHAPE, 25)
    assert not op.is_linear and op.in_shape == SHAPE and op.out_shape == (25,)
    x = jax.random.normal(jax.random.PRNGKey(12), SHAPE)
    np.testing.assert_array_equal(op(x), jnp.sign(op.linear(x)))
    w = jax.random.normal(jax.random.PRNGKey(13), (25,))
    g_st = jax.grad(lambda v: jnp.vdot(w, op(v)))(x)
    g_lin = jax.grad(lambda v: jnp.vdot(w, op.linear(v)))(x)
    # The straight-through gradient is that of the linear part; the true gradient of sign is 0.
    np.testing.assert_allclose(g_st, g_lin, rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(g_lin))) > 0.1
    # Also through a loss that is nonlinear in y.
    g_st = jax.grad(lambda v: jnp.sum((op(v) - 0.3) ** 2))(x)
    g_ref = jax.grad(lambda v, s: jnp.sum((op.linear(v) + s - 0.3) ** 2))(
        x, jnp.sign(op.linear(x)) - op.linear(x))
    np.testing.assert_allclose(g_st, g_ref, rtol=1e-5, atol=1e-5)


def test_sign_measurements_of_fast_operator():
    lin = ops.fast_cs(jax.random.PRNGKey(14), SHAPE, 20)
    op = ops.sign_measurements(lin)
    x = jax.random.normal(jax.random.PRNGKey(15), SHAPE)
    np.testing.assert_array_equal(op(x), jnp.sign(lin(x)))
    with pytest.raises(ValueError, match="linear"):
        ops.sign_measurements(op)


@pytest.mark.parametrize(
    "make",
    [
        lambda k: ops.gaussian_cs(k, SHAPE, 20),
        lambda k: ops.fast_cs(k, SHAPE, 20),
        lambda k: ops.subpixel(k, SHAPE, 0.25),
        lambda k: ops.inpainting(ops.random_mask(k, SHAPE, 0.5)),
        lambda k: ops.one_bit_cs(k, SHAPE, 20),
        lambda k: ops.from_function(_matmul, SHAPE, params=jax.random.normal(k, (20, N)),
                                    linear=True),
    ],
    ids=["gaussian_cs", "fast_cs", "subpixel", "random_mask", "one_bit_cs", "from_function"],
)
def test_vmapped_per_image_operators(make):
    batch = 4
    keys = jax.random.split(jax.random.PRNGKey(16), batch)
    xs = jax.random.uniform(jax.random.PRNGKey(17), (batch, *SHAPE))
    batched = jax.vmap(make)(keys)
    ys = jax.jit(jax.vmap(lambda o, x: o(x)))(batched, xs)
    for i in range(batch):
        op_i = make(keys[i])
        np.testing.assert_allclose(ys[i], op_i(xs[i]), rtol=1e-5, atol=1e-6)
    assert len({np.asarray(y).tobytes() for y in ys}) == batch  # each image its own operator
    if batched.is_linear:
        xts = jax.vmap(lambda o, y: o.A_adjoint(y))(batched, ys)
        for i in range(batch):
            np.testing.assert_allclose(xts[i], make(keys[i]).A_adjoint(ys[i]),
                                       rtol=1e-5, atol=1e-6)


def test_downsample_matches_block_means():
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(18), (12, 8, 3)))
    op = ops.downsample((12, 8, 3), 4)
    assert op.out_shape == (3, 2, 3)
    # Reference from scikit-image (independent implementation of block averaging).
    np.testing.assert_allclose(op(jnp.asarray(x)), block_reduce(x, (4, 4, 1), np.mean),
                               rtol=1e-6)


def test_masks():
    shape = (10, 12, 3)
    box = np.asarray(ops.center_box_mask(shape, (4, 6)))
    assert box.shape == shape and box.dtype == np.float32
    assert (box == 0).sum() == 4 * 6 * 3
    assert np.all(box[3:7, 3:9] == 0) and box.sum() == box.size - 72
    # a shape whose row and column offsets differ, (8 − 2)//2 = 3 and (16 − 4)//2 = 6: a mix-up
    # of the two (equal above) moves the box
    wide = np.asarray(ops.center_box_mask((8, 16, 1), (2, 4)))[..., 0]
    rows, cols = np.nonzero(wide == 0)
    assert set(rows) == {3, 4} and set(cols) == {6, 7, 8, 9} and len(rows) == 8
    rm = np.asarray(ops.random_mask(jax.random.PRNGKey(19), (64, 64, 3), 0.3))
    assert set(np.unique(rm)) <= {0.0, 1.0}
    np.testing.assert_array_equal(rm[..., 0], rm[..., 2])  # pixel-level: same in all channels
    # 4,096 Bernoulli(0.3) pixels: std of the kept fraction is 0.0072; 5 sigma = 0.036.
    assert abs(rm[..., 0].mean() - 0.3) < 0.036
    sp = np.asarray(ops.subpixel(jax.random.PRNGKey(20), (64, 64, 3), 0.25).mask)
    assert sp.shape == (64, 64, 3)
    assert not np.array_equal(sp[..., 0], sp[..., 1])  # sub-pixel level
    # 12,288 Bernoulli(0.75) entries: std of the mean 0.0039; 5 sigma = 0.02.
    assert abs(sp.mean() - 0.75) < 0.02
    x = jax.random.uniform(jax.random.PRNGKey(21), shape)
    op = ops.inpainting(box[..., 0], shape)  # a 2-D mask applied to a colour image
    np.testing.assert_array_equal(op(x), box * np.asarray(x))


def test_matrix_operator_matches_matmul():
    a = np.arange(2 * N, dtype=np.float32).reshape(2, N) / N
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(22), SHAPE))
    op = ops.matrix_operator(a, SHAPE)
    np.testing.assert_allclose(op(jnp.asarray(x)), a @ x.ravel(), rtol=1e-5)


def test_from_function_equals_the_operator_it_reimplements():
    a = jax.random.normal(_K[2], (7, N))
    mine, ref = ops.from_function(_matmul, SHAPE, params=a, linear=True), \
        ops.matrix_operator(a, SHAPE)
    x, y = jax.random.uniform(_K[3], SHAPE), jax.random.normal(_K[4], (7,))
    assert mine.out_shape == ref.out_shape == (7,)
    np.testing.assert_allclose(mine(x), ref(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mine.A_adjoint(y), ref.A_adjoint(y), rtol=1e-5, atol=1e-5)
    # a nonlinear operator: out_shape traced from fn, gradients flow, no adjoint
    mag = ops.from_function(lambda x: jnp.abs(jnp.fft.rfft2(x[..., 0])), SHAPE)
    assert not mag.is_linear and mag.out_shape == (8, 3)
    g = jax.grad(lambda x: jnp.sum(mag(x) ** 2))(x)
    assert g.shape == SHAPE and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    for method in (lambda: mag.A_adjoint(jnp.zeros(mag.out_shape)), lambda: mag.A(x)):
        with pytest.raises(ValueError, match="linear=True"):
            method()


def test_from_function_builds_inside_jit():
    """Inside jit fn(0) is traced, so the affine check is skipped rather than failing."""
    def deblur_residual(x, kernel):
        op = ops.from_function(_blur, SHAPE, params=kernel, linear=True)
        return op.A_adjoint(op(x))

    x, k = jax.random.uniform(_K[0], SHAPE), jax.random.uniform(_K[1], (3, 3))
    np.testing.assert_allclose(jax.jit(deblur_residual)(x, k), deblur_residual(x, k),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fn,linear,words",
    [
        (lambda x: jnp.tanh(x), True, "not linear"),
        (lambda x: x * x, True, "not linear"),
        (lambda x: x + 1.0, True, "affine"),
        (lambda x: jnp.fft.fft2(x[..., 0]), False, "real floating"),
        (lambda x: x.reshape(5), False, "fails on an image of shape"),
        (lambda x: (x, x), False, "one array"),
        (lambda x: x > 0, False, "real floating"),
    ],
    ids=["tanh", "square", "affine", "complex", "bad-reshape", "tuple", "bool"],
)
def test_from_function_rejects_what_it_cannot_serve(fn, linear, words):
    with pytest.raises(ValueError, match=words):
        ops.from_function(fn, SHAPE, linear=linear)


def test_from_function_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        ops.from_function(np.ones(3), SHAPE)
    with pytest.raises(ValueError, match="shape"):
        ops.from_function(lambda x: x, (8, 0, 2))
    op = ops.from_function(lambda x: x[:2], SHAPE)
    with pytest.raises(ValueError, match=r"^x must have shape \(8, 4, 2\)"):
        op(jnp.zeros((8, 4, 1)))


def test_adjoint_check_detects_wrong_adjoint():
    op = ops.gaussian_cs(jax.random.PRNGKey(23), SHAPE, 30)

    class Wrong:
        is_linear = True
        in_shape, out_shape = op.in_shape, op.out_shape
        A = op.A

        def A_adjoint(self, y):  # noqa: N802
            return 2.0 * op.A_adjoint(y)

    # For random x, y the inner products are ~ ||Ax|| ||y|| / sqrt(m), so a wrong adjoint shows
    # as an error of order 1/sqrt(m) ~ 0.2 relative to the Cauchy-Schwarz bound: orders of
    # magnitude above float32 rounding (~1e-7, see test_shapes_and_A_alias).
    errs = [float(ops.adjoint_check(Wrong(), jax.random.PRNGKey(i))) for i in range(3)]
    assert max(errs) > 1e-2
    assert float(ops.adjoint_check(op, jax.random.PRNGKey(0))) < 1e-5


def test_adjoint_check_of_an_operator_built_per_image_says_how_to_check_one_image():
    """A batch of operators (vmapped construction) is not one image's operator: the check says
    how to take image i (the layout message it replaces speaks of recover's flag)."""
    batch = jax.vmap(lambda c: ops.from_function(lambda x, c: c * x, SHAPE, params=c,
                                                 linear=True))(jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"adjoint_check takes one image's operator.*a\[i\]"):
        ops.adjoint_check(batch, jax.random.PRNGKey(0))
    one = jax.tree.map(lambda a: a[1], batch)
    assert float(ops.adjoint_check(one, jax.random.PRNGKey(0))) < 1e-5  # float32 rounding


@pytest.mark.parametrize(
    "call,arg",
    [
        (lambda: ops.gaussian_cs(jax.random.PRNGKey(0), SHAPE, 0), "m"),
        (lambda: ops.gaussian_cs(jax.random.PRNGKey(0), SHAPE, N + 1), "m"),
        (lambda: ops.gaussian_cs(jax.random.PRNGKey(0), SHAPE, 2.5), "m"),
        (lambda: ops.fast_cs(jax.random.PRNGKey(0), SHAPE, 0), "m"),
        (lambda: ops.fast_cs(jax.random.PRNGKey(0), SHAPE, N + 1), "m"),
        (lambda: ops.fast_cs(jax.random.PRNGKey(0), ODD, 5, transform="hadamard"),
         "hadamard"),
        (lambda: ops.fast_cs(jax.random.PRNGKey(0), SHAPE, 5, transform="fft"), "transform"),
        (lambda: ops.one_bit_cs(jax.random.PRNGKey(0), SHAPE, 0), "m"),
        (lambda: ops.identity((8, 0, 3)), "shape"),
        (lambda: ops.identity("abc"), "shape"),
        (lambda: ops.downsample(SHAPE, 5), "factor"),
        (lambda: ops.downsample(SHAPE, 0), "factor"),
        (lambda: ops.downsample((8, 8), 2), "shape"),
        (lambda: ops.inpainting(np.ones((8, 4)), (8, 5, 2)), "mask"),
        (lambda: ops.inpainting(np.ones((8, 4, 3)), SHAPE), "mask"),
        (lambda: ops.inpainting(np.full((8, 4), 0.5)), "binary"),
        (lambda: ops.inpainting(np.ones((8,))), "mask"),
        (lambda: ops.center_box_mask(SHAPE, 5), "box_size"),
        (lambda: ops.center_box_mask(SHAPE, 0), "box_size"),
        (lambda: ops.random_mask(jax.random.PRNGKey(0), SHAPE, 0.0), "keep_fraction"),
        (lambda: ops.random_mask(jax.random.PRNGKey(0), SHAPE, 1.5), "keep_fraction"),
        (lambda: ops.subpixel(jax.random.PRNGKey(0), SHAPE, 1.0), "p"),
        (lambda: ops.subpixel(jax.random.PRNGKey(0), SHAPE, -0.1), "p"),
        (lambda: ops.matrix_operator(np.ones((3, N + 1)), SHAPE), "matrix"),
        (lambda: ops.identity(SHAPE)(jnp.zeros((8, 4, 1))), "x"),
        (lambda: ops.gaussian_cs(jax.random.PRNGKey(0), SHAPE, 5)(jnp.zeros(N)), "x"),
        (lambda: ops.gaussian_cs(jax.random.PRNGKey(0), SHAPE, 5).A_adjoint(jnp.zeros(4)), "y"),
    ],
)
def test_bad_inputs_raise(call, arg):
    """The error names the argument at fault, as a word ("m" is not the m of "must")."""
    with pytest.raises(ValueError, match=rf"\b{re.escape(arg)}\b"):
        call()


def test_inpainting_2d_mask_default_shape_is_single_channel():
    op = ops.inpainting(np.ones((8, 5)))
    assert op.in_shape == (8, 5, 1)


def test_function_operator_params_from_a_python_float_and_a_float32_share_one_compilation():
    """As for noise models: params 2.0 and jnp.float32(3.0) trace a jitted solve once."""
    traces = []

    @jax.jit
    def apply(op):
        traces.append(None)
        return op(jnp.ones((2, 3, 1)))

    def scale(x, c):  # one function object: a new lambda per operator would recompile
        return c * x

    for c in (2.0, jnp.float32(3.0)):
        apply(ops.from_function(scale, (2, 3, 1), params=c, linear=True))
    assert len(traces) == 1


def test_matrix_adjoint_checks_the_layout_as_the_forward_does():
    """A per-image (vmapped) matrix used as one image's, or a shared one sliced as if per
    image, is the layout error in both directions (it was a reshape TypeError, a silent pass
    for a batch of 1, or an IndexError from out_shape in the adjoint)."""
    per_image = jax.vmap(lambda k: ops.gaussian_cs(k, (4, 2, 1), 3))(
        jax.random.split(jax.random.PRNGKey(0), 2))
    for op in (per_image, jax.tree.map(lambda a: a[:1], per_image)):
        with pytest.raises(ValueError, match="operator"):
            op.A_adjoint(jnp.ones(3))
    shared = ops.gaussian_cs(jax.random.PRNGKey(1), (4, 2, 1), 2)
    with pytest.raises(ValueError, match="operator"):
        jax.vmap(lambda o, y: o.A_adjoint(y))(shared, jnp.ones((2, 2)))


@pytest.mark.parametrize("scale", [1.0, 1e7, 1e9])
def test_sign_measurements_value_is_the_sign_at_any_scale(scale):
    """The forward value is sign(Ax) exactly, also where |Ax| is past float32's 2^23 (the form
    z + stop_gradient(sign(z) - z) gave 0 or ±2 there), and the gradient is still A's."""
    lin = ops.matrix_operator(jnp.eye(4), (4, 1, 1))
    op = ops.sign_measurements(lin)
    x = scale * jnp.array([2.1, -1.8, 3.0, -0.7]).reshape(4, 1, 1)
    np.testing.assert_array_equal(op(x), jnp.array([1.0, -1.0, 1.0, -1.0]))
    w = jnp.arange(1.0, 5.0)
    grad = jax.grad(lambda v: jnp.vdot(w, op(v)))(x)
    np.testing.assert_array_equal(grad.reshape(-1), w)


def test_function_adjoint_takes_y_of_another_dtype(x64):
    """A from_function operator's transpose needs a cotangent of fn's output dtype: a float32
    y for a float64 fn, or a fn that casts to float32, is converted (it was a TypeError), as
    the built-in operators promote."""
    a = jax.random.normal(jax.random.PRNGKey(2), (4, 6), jnp.float64)
    op = ops.from_function(lambda x, a: a @ x.reshape(-1), (3, 2, 1), params=a, linear=True)
    y = jnp.arange(4.0, dtype=jnp.float32)
    np.testing.assert_allclose(op.A_adjoint(y).reshape(-1), a.T @ y, rtol=1e-12)
    f32 = ops.from_function(lambda x: x.astype(jnp.float32).reshape(-1)[:4], (3, 2, 1),
                            linear=True)
    assert float(ops.adjoint_check(f32, jax.random.PRNGKey(0))) < 1e-6  # float32 rounding


def test_adjoint_check_of_a_zero_operator_is_zero():
    """An all-zero mask is a valid operator; its check is 0/0 and reads 0, not NaN."""
    zero = ops.inpainting(np.zeros((4, 2)))
    assert float(ops.adjoint_check(zero, jax.random.PRNGKey(0))) == 0.0
    broken = np.array(jax.random.normal(jax.random.PRNGKey(1), (3, 4)))
    broken[0, 0] = np.nan  # a NaN is no zero operator: it must not pass a `< tol` check
    assert np.isnan(ops.adjoint_check(ops.matrix_operator(broken, (2, 2, 1)),
                                      jax.random.PRNGKey(0)))
