"""flowinv.plotting: what each figure draws, and the errors for inputs it cannot draw."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from flowinv import metrics, plotting  # noqa: E402
from flowinv.recover import Recovery  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _images(seed, shape=(3, 6, 5, 1)):
    # values beyond [0, 1] on purpose: the grid shows them clipped
    return np.random.default_rng(seed).uniform(-0.3, 1.3, shape)


def test_image_grid_draws_each_image_clipped_with_its_psnr_against_the_reference():
    truth, noisy, rec = np.clip(_images(0), 0, 1), _images(1), _images(2)  # a truth in [0, 1]
    fig = plotting.image_grid({"truth": truth, "noisy": noisy, "recovered": rec},
                              reference="truth", title="t")
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["truth", "noisy", "recovered"]
    assert fig.texts[0].get_text() == "t"
    for j, images in enumerate((truth, noisy, rec)):
        for i in range(3):
            shown = axes[i, j].images[0]
            np.testing.assert_array_equal(shown.get_array(), np.clip(images[i, ..., 0], 0, 1))
            assert shown.get_cmap().name == "gray" and shown.get_clim() == (0, 1)
            label = axes[i, j].get_xlabel()
            if j == 0:
                assert label == ""
            else:
                assert label == f"{metrics.psnr(images[i], truth[i]):.2f} dB"


def test_image_grid_refuses_a_reference_outside_0_1():
    truth = np.clip(_images(0), 0, 1)
    with pytest.raises(ValueError, match=r"reference column 'truth' must lie in \[0, 1\]"):
        plotting.image_grid({"truth": truth * 255, "noisy": truth * 255}, reference="truth")
    assert not plt.get_fignums()  # refused before any figure was made


def test_image_grid_takes_pairs_rgb_and_a_single_image():
    rgb = _images(3, (4, 4, 3))
    fig = plotting.image_grid([("a", rgb), ("b", rgb * 0.5)])
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), np.clip(rgb * 0.5, 0, 1))
    assert all(ax.get_xlabel() == "" for ax in fig.axes)  # no reference, no labels


@pytest.mark.parametrize("columns, reference, match", [
    ({}, None, "empty"),
    ({"truth": np.zeros((2, 4, 4, 1)), "y": np.zeros((3, 4, 4, 1))}, None, "same number"),
    ([("a", np.zeros((2, 4, 4, 1))), ("a", np.zeros((3, 4, 4, 1)))], None, "same number"),
    ({"truth": np.zeros((2, 4, 4, 1)), "y": np.zeros((2, 50))}, None, "not an image"),
    ({"truth": np.zeros((2, 4, 4, 2))}, None, "C = 1 or 3"),
    # images without their channel axis: the message gives the shape as passed
    ({"truth": np.zeros((2, 8, 8))}, None, r"got \(2, 8, 8\);"),
    ({"truth": np.zeros((2, 4, 4, 1))}, "x", "reference 'x' is not a column"),
])
def test_image_grid_rejects_what_it_cannot_draw(columns, reference, match):
    with pytest.raises(ValueError, match=match):
        plotting.image_grid(columns, reference=reference)


@pytest.mark.parametrize("size", [0, -1.0, float("inf"), True])
def test_image_grid_rejects_a_size_that_is_not_a_positive_number(size):
    with pytest.raises(ValueError, match="size must be"):
        plotting.image_grid({"a": np.zeros((4, 4, 1))}, size=size)


def test_image_grid_rejects_a_column_that_is_not_a_pair():
    with pytest.raises(TypeError, match="mapping or"):
        plotting.image_grid([np.zeros((4, 4, 1))])


def _recovery(loss_history, znorm_history):
    b = loss_history.shape[:-1]
    zeros = np.zeros(b)
    return Recovery(x=None, z=None, loss=zeros, iterations=zeros, converged=zeros,
                    diverged=zeros, loss_history=loss_history, znorm_history=znorm_history,
                    stalled=zeros)


def test_convergence_draws_each_images_history_up_to_its_stop():
    loss = np.array([[4.0, 2.0, 1.0, np.nan], [3.0, 2.5, 2.2, 2.1]])
    znorm = np.array([[0.5, 0.7, 0.8, np.nan], [0.1, 0.2, 0.3, 0.35]])
    fig = plotting.convergence(_recovery(loss, znorm))
    ax_loss, ax_z = fig.axes
    assert ax_loss.get_yscale() == "log"
    for ax, hist in ((ax_loss, loss), (ax_z, znorm)):
        for line, h in zip(ax.get_lines(), hist, strict=True):
            finite = np.isfinite(h)
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 5)[finite])
            np.testing.assert_array_equal(line.get_ydata(), h[finite])


def test_convergence_of_one_image_with_negative_losses_stays_linear():
    # MAP losses are negative log densities and can be negative: no log scale then
    fig = plotting.convergence(_recovery(np.array([1.0, -2.0, -3.0]), np.array([1.0, 2, 3])))
    assert fig.axes[0].get_yscale() == "linear"
    assert len(fig.axes[0].get_lines()) == 1


def test_convergence_rejects_what_is_not_a_recovery():
    with pytest.raises(TypeError, match="flowinv.Recovery"):
        plotting.convergence(np.zeros((2, 3)))


def test_image_grid_leaves_display_only_columns_unlabelled():
    """An observation drawn with its holes filled grey is not the observation a result table
    scores: its PSNR label would disagree with the table's, so it gets none."""
    truth = np.clip(_images(0), 0, 1)
    fig = plotting.image_grid({"truth": truth, "observed (grey=missing)": truth * 0.5,
                               "recovered": truth}, reference="truth",
                              unscored=["observed (grey=missing)"])
    axes = np.array(fig.axes).reshape(3, 3)
    assert all(ax.get_xlabel() == "" for ax in axes[:, 1])
    assert all(ax.get_xlabel() == "inf dB" for ax in axes[:, 2])


def test_experiment_figures_leave_the_callers_backend_alone(tmp_path):
    """``run(config)`` from a notebook draws its sheets and plots without switching the
    notebook's backend (``matplotlib.use("Agg")`` there broke inline display)."""
    from experiments import common

    backend = matplotlib.get_backend()
    plt.switch_backend("svg")  # stands in for a notebook's inline backend
    try:
        common.sample_sheet(tmp_path / "s.png", [("truth", np.zeros((1, 8, 8, 1)))], "t")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "s.png").stat().st_size > 0
    finally:
        plt.switch_backend(backend)


def test_image_grid_unscored_takes_one_name_and_refuses_unknown_ones():
    """``unscored="observed"`` was the set of its letters, and a misspelt name was ignored:
    either way the column kept the PSNR label it was named to lose."""
    truth = np.clip(_images(0), 0, 1)
    fig = plotting.image_grid({"truth": truth, "observed": truth * 0.5}, reference="truth",
                              unscored="observed")
    assert all(ax.get_xlabel() == "" for ax in np.array(fig.axes).reshape(-1, 2)[:, 1])
    with pytest.raises(ValueError, match="not columns"):
        plotting.image_grid({"truth": truth, "observed": truth * 0.5}, reference="truth",
                            unscored=["obsreved"])
