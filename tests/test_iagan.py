"""IAGAN (flowinv.baselines.iagan): the back-projection's algebra, the adaptation's contract
(loss, batching, the start it keeps), its argument checks, and the experiment's use of it."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowinv import operators
from flowinv.baselines import dcgan, iagan

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def gan():
    cfg = dcgan.DCGANConfig(SHAPE, latent_dim=4, base_channels=4)
    params = dcgan.init_params(jax.random.PRNGKey(0), cfg)["generator"]
    return dcgan.as_generator(cfg), params


def _op(m, seed=1, dtype=jnp.float32):
    return operators.gaussian_cs(jax.random.PRNGKey(seed), SHAPE, m, dtype=dtype)


def test_back_projection_fits_the_measurements_in_the_row_space(x64):
    op = _op(20, dtype=jnp.float64)
    x_true, x = (jax.random.uniform(jax.random.PRNGKey(k), SHAPE, jnp.float64) for k in (2, 3))
    y = op(x_true)
    x_bp = iagan.back_project(op, x, y, tol=1e-12)
    np.testing.assert_allclose(op(x_bp), y, atol=1e-9)  # A x̂ = y (δ = 0)
    # the change lies in the row space of A: it is Aᵀw for some w (dense least squares)
    a, d = np.asarray(op.matrix), np.asarray(x_bp - x).ravel()
    w = np.linalg.lstsq(a.T, d, rcond=None)[0]
    np.testing.assert_allclose(a.T @ w, d, atol=1e-9)
    # damping δ shrinks the step towards y: the residual grows with δ, never past the start's
    residuals = [float(jnp.linalg.norm(op(iagan.back_project(op, x, y, d, tol=1e-12)) - y))
                 for d in (0.0, 0.1, 10.0)]
    assert residuals == sorted(residuals) and residuals[-1] < float(jnp.linalg.norm(op(x) - y))


def test_adaptation_lowers_the_loss_and_a_batch_equals_single_images(gan):
    generator, params = gan
    op = _op(40)
    x_true = jax.random.uniform(jax.random.PRNGKey(4), (2, *SHAPE))
    y = jax.vmap(op)(x_true)
    z0 = jax.random.normal(jax.random.PRNGKey(5), (2, generator.latent_dim))
    fit = jax.vmap(lambda yy, zz: iagan.iagan_fit(generator, params, yy, op, zz, steps=30,
                                                  lr_weights=1e-2, lr_latent=1e-2))
    xs, losses = fit(y, z0)
    assert xs.shape == (2, *SHAPE) and losses.shape == (2, 30)
    # adapting the weights reaches losses the trained generator's latent search cannot start at
    assert np.all(np.asarray(losses[:, -1]) < 0.5 * np.asarray(losses[:, 0]))
    # each image adapts its own copy of the weights: the batch equals the images one by one
    one, one_losses = iagan.iagan_fit(generator, params, y[1], op, z0[1], steps=30,
                                      lr_weights=1e-2, lr_latent=1e-2)
    np.testing.assert_allclose(xs[1], one, atol=1e-5)
    np.testing.assert_allclose(losses[1], one_losses, rtol=1e-5)


def test_an_image_of_the_generator_from_its_own_latent_stays(gan):
    generator, params = gan
    op = _op(30)
    z = jax.random.normal(jax.random.PRNGKey(6), (generator.latent_dim,))
    x = generator.apply(params, z)
    x_hat, losses = iagan.iagan_fit(generator, params, op(x), op, z, steps=5)
    assert float(losses[0]) < 1e-10  # y = A G(z): the start fits exactly, the gradient is 0
    np.testing.assert_allclose(x_hat, x, atol=1e-6)


@pytest.mark.parametrize("change,error,words", [
    (dict(z0=jnp.zeros(3)), ValueError, "z0 must be one latent"),
    (dict(y=jnp.zeros(7)), ValueError, "y must have shape"),
    (dict(op=operators.gaussian_cs(jax.random.PRNGKey(0), (4, 4, 1), 5)), ValueError,
     "the generator makes"),
    (dict(back_projection=-1.0), ValueError, "must be >= 0"),
    (dict(steps=0), ValueError, "steps"),
    (dict(lr_weights=float("nan")), ValueError, "lr_weights"),
    (dict(op=operators.one_bit_cs(jax.random.PRNGKey(0), SHAPE, 20), y=jnp.zeros(20),
          back_projection=0.0), TypeError, "linear operator"),
])
def test_bad_arguments_are_named(gan, change, error, words):
    generator, params = gan
    kwargs = dict(y=jnp.zeros(20), op=_op(20), z0=jnp.zeros(4))
    kwargs.update(change)
    args = [kwargs.pop(k) for k in ("y", "op", "z0")]
    with pytest.raises(error, match=words):
        iagan.iagan_fit(generator, params, *args, **kwargs)


def test_integer_measurements_adapt_as_float_ones(gan):
    """An integer ``y`` set the learning rates' dtype: both became 0, and nothing adapted."""
    generator, params = gan
    op = _op(20)
    y = jnp.round(10 * op(jax.random.uniform(jax.random.PRNGKey(7), SHAPE))).astype(jnp.int32)
    z0 = jnp.zeros(generator.latent_dim)
    fit = lambda yy: iagan.iagan_fit(generator, params, yy, op, z0, steps=5, lr_weights=1e-2)
    (x_int, losses_int), (x_float, _) = fit(y), fit(y.astype(jnp.float32))
    np.testing.assert_array_equal(x_int, x_float)
    assert float(losses_int[-1]) < float(losses_int[0])


def test_back_projection_refuses_a_negative_damping():
    op = _op(20)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        iagan.back_project(op, jnp.zeros(SHAPE), jnp.zeros(20), -0.5)


def test_compressed_sensing_reports_iagan_chosen_on_validation(gan, tmp_path):
    import flowinv
    from experiments import compressed_sensing as cs
    from flowinv import checkpoints

    generator, params = gan
    gan_dir = tmp_path / "gan"
    cfg = dcgan.DCGANConfig(SHAPE, latent_dim=4, base_channels=4)
    checkpoints.save(gan_dir, params, {"kind": "dcgan", "dcgan": cfg.to_dict()})
    flow = flowinv.glow(SHAPE, levels=1, steps=1, width=4)
    prior_dir = tmp_path / "prior"
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, *SHAPE), minval=0.05, maxval=0.95)
    checkpoints.save(prior_dir, jax.jit(flow.init)(jax.random.PRNGKey(1), images),
                     {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    config = cs.Config(dataset="digits", ood_dataset="none", prior=str(prior_dir),
                       gan=str(gan_dir), num_images=2, val_images=1, maxiter=3,
                       ratios=(0.5,), gan_restarts=1, iagan_steps=3, iagan_lrs=(1e-3, 1e-2),
                       methods=("dcgan", "iagan"), out=str(tmp_path / "out"), progress=False)
    cs.run(config)
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["dcgan", "dcgan", "iagan", "iagan"]
    assert all(np.isfinite(float(r["psnr"])) and float(r["seconds"]) > 0 for r in rows)
    with open(tmp_path / "out" / "iagan_choices.csv", newline="") as f:
        (choice,) = list(csv.DictReader(f))  # one ratio, one test set
    assert float(choice["lr"]) in (1e-3, 1e-2) and choice["back_projection"] in ("True", "False")
    assert np.isfinite(float(choice["val_psnr"]))


def test_iagan_pick_is_the_candidate_of_best_validation_psnr(monkeypatch):
    """Of every (learning rate, back-projection) pair, the one whose validation rows are
    closest to the validation images; its test rows are what is reported. The adaptation is
    replaced by rows that name their candidate (the selection is what is tested here)."""
    from types import SimpleNamespace

    from experiments import compressed_sensing as cs

    nt, val = 2, np.full((1, 4, 4, 1), 0.5, np.float32)

    def rows(lr, projected):
        test = np.full((nt, 4, 4, 1), 10 * lr + 0.01 * projected, np.float32)
        miss = 0.01 if (lr, projected) == (1e-2, True) else 0.2
        return np.concatenate([test, val + miss])

    monkeypatch.setattr(cs, "_iagan", lambda gan, y, op, z0, steps, lr: (
        rows(lr, False), rows(lr, True)))
    config = SimpleNamespace(iagan_lrs=(1e-3, 1e-2, 1e-1), iagan_steps=1)
    x, seconds, choice = cs._pick_iagan(None, None, None, None, nt, val, config, 1.0)
    assert choice == {"lr": 1e-2, "back_projection": True, "val_psnr": 40.0}  # MSE 1e-4
    np.testing.assert_array_equal(x, rows(1e-2, True)[:nt])
    # the test images' share (2 of 3 images) of the CSGM start's seconds and the adaptation's
    assert seconds >= 1.0 * nt / (nt + len(val))
