"""optim_nb.stages: the shared test problems, `sweep`, and the drawing helpers."""
import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

import optim_nb  # noqa: E402
from optim_nb import stages  # noqa: E402
from optim_nb.stages import (BEALE, NOISY, QUADRATIC, ROSENBROCK, ROTATED, SADDLE, STAGES, Stage,  # noqa: E402
                             animate_paths, path, player_html, plot_curves, plot_paths, plot_stage, plot_sweep,
                             quadratic, sweep)

from optim_nb.registry import REGISTRY  # noqa: E402

# every optimizer with its defaults, and with the options that use all of its state
# a stage's parameter is a point of the plane, a vector: the optimizers that take any shape (Entry.shapes;
# one that takes matrices only, Muon, cannot step it, as chapter 41 says)
# the classes themselves: `path` and `sweep` put one with train()/eval() modes (schedule-free) in training mode
OPTIMIZERS = [(e.cls, options) for e in REGISTRY.values() if e.shapes != "2-D"
              for options in ({}, {k: v for k, v in e.options.items() if k != "lr"})]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_the_stages_are_the_four_classics_and_two_variations_of_the_quadratic():
    assert list(STAGES) == ["quadratic", "Rosenbrock", "saddle", "Beale", "rotated quadratic", "noisy quadratic"]
    assert [STAGES[n] for n in STAGES] == [QUADRATIC, ROSENBROCK, SADDLE, BEALE, ROTATED, NOISY]
    assert [s.noise for s in STAGES.values()] == [0, 0, 0, 0, 0, 0.5]
    assert all(isinstance(s, Stage) for s in STAGES.values())


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_each_minimum_is_a_stationary_point_below_the_start_and_inside_the_window(stage):
    m = torch.tensor(stage.minimum, dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(stage(m), m)
    assert grad.abs().max() < 1e-12
    assert stage.gap(torch.tensor(stage.minimum, dtype=torch.float64)) == 0
    assert stage.gap(torch.tensor(stage.x0)) > 0
    for point in (stage.minimum, stage.x0):
        assert stage.xlim[0] < point[0] < stage.xlim[1] and stage.ylim[0] < point[1] < stage.ylim[1]
    levels = stage.levels()
    assert len(levels) == 20 and (levels.diff() > 0).all() and levels[0] > stage.f_min


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_the_minimum_is_the_lowest_point_of_the_window(stage):
    xs = torch.linspace(*stage.xlim, 301, dtype=torch.float64)
    ys = torch.linspace(*stage.ylim, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)
    assert stage.gap(grid).min() >= -1e-12


def test_the_functions_are_the_textbook_ones():
    assert ROSENBROCK(torch.tensor([0.0, 0.0])) == 1 and ROSENBROCK(torch.tensor([-1.0, 2.0])) == 104
    assert SADDLE(torch.tensor([0.0, 0.0])) == 0 and SADDLE.f_min == pytest.approx(-1, abs=1e-15)
    assert BEALE(torch.tensor([0.0, 0.0])) == pytest.approx(1.5 ** 2 + 2.25 ** 2 + 2.625 ** 2)
    assert QUADRATIC.f is quadratic and quadratic(torch.tensor([1.0, 1.0])) == pytest.approx(2.1)
    # the saddle: a saddle point at the origin (Hessian diag(2, -2))
    h = torch.autograd.functional.hessian(SADDLE.f, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(h, torch.diag(torch.tensor([2.0, -2.0], dtype=torch.float64)))


def test_gap_accepts_stacks_of_points():
    pts = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [-1.0, 1.0]]], dtype=torch.float64)
    expect = torch.tensor([[0.0, 1.0], [100.0, 4.0]], dtype=torch.float64)
    assert torch.equal(ROSENBROCK.gap(pts), expect)


def test_stage_is_frozen():
    with pytest.raises(Exception):
        QUADRATIC.x0 = (0.0, 0.0)


@settings(max_examples=20)
@given(which=st.integers(0, len(OPTIMIZERS) - 1), stage=st.sampled_from(list(STAGES)),
       exponents=st.lists(st.integers(-8, 4), min_size=1, max_size=5))
def test_sweep_is_path_for_every_learning_rate(which, stage, exponents):
    """Each row of a sweep is bit for bit the single run with that learning rate, diverged or not."""
    cls, options = OPTIMIZERS[which]
    stage = STAGES[stage]
    lrs = [10 ** (k / 2) for k in exponents]
    runs = sweep(cls, stage, stage.x0, lrs, steps=15, **options)
    assert runs.shape == (len(lrs), 16, 2) and runs.dtype == torch.float64
    for lr, run in zip(lrs, runs):
        single = path(cls, stage, stage.x0, steps=15, lr=lr, **options)
        assert torch.equal(run.isnan(), single.isnan())
        assert torch.equal(run.nan_to_num(0.0), single.nan_to_num(0.0)), (cls.__name__, lr)


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.train_eval])
def test_a_path_of_an_optimizer_with_modes_records_the_x_of_a_run_that_never_evaluates(name):
    """Schedule-free: path and sweep put it in training mode and record x (what eval() puts in the
    parameter) after each step, leaving y as a loop without eval() leaves it; the reference's class, of
    the same name, is found in the registry as well and gives the same path bit for bit."""
    entry, steps, lr = REGISTRY[name], 8, 0.1

    def loop(k):
        x = torch.tensor(QUADRATIC.x0, dtype=torch.float64, requires_grad=True)
        opt = entry.ready(entry.cls([x], lr=lr))
        for _ in range(k):
            opt.zero_grad()
            QUADRATIC(x).backward()
            opt.step()
        y = x.detach().clone()
        opt.eval()
        return x.detach().clone(), y

    p = path(entry.cls, QUADRATIC, QUADRATIC.x0, steps=steps, lr=lr)
    xs, ys = zip(*[loop(k) for k in range(steps + 1)])
    assert torch.equal(p, torch.stack(xs)) and not torch.equal(p, torch.stack(ys))
    assert torch.equal(sweep(entry.cls, QUADRATIC, QUADRATIC.x0, [lr / 3, lr], steps=steps)[1], p)
    assert torch.equal(path(entry.reference, QUADRATIC, QUADRATIC.x0, steps=steps, lr=lr), p)


def test_a_path_of_an_optimizer_without_modes_is_its_parameter():
    x = torch.tensor(QUADRATIC.x0, dtype=torch.float64, requires_grad=True)
    opt = optim_nb.Adam([x], lr=0.1)
    points = [x.detach().clone()]
    for _ in range(5):
        opt.zero_grad()
        QUADRATIC(x).backward()
        opt.step()
        points.append(x.detach().clone())
    assert torch.equal(path(optim_nb.Adam, QUADRATIC, QUADRATIC.x0, steps=5, lr=0.1), torch.stack(points))


def test_the_sweep_comparison_can_fail():
    a = sweep(optim_nb.Adam, ROSENBROCK, ROSENBROCK.x0, [0.1], steps=5)[0]
    b = path(optim_nb.Adam, ROSENBROCK, ROSENBROCK.x0, steps=5, lr=0.1 + 1e-12)
    assert not torch.equal(a, b)


def test_a_diverging_run_leaves_the_others_alone():
    runs = sweep(optim_nb.SGD, BEALE, BEALE.x0, [1e-3, 100.0], steps=20)
    assert not runs[1, -1].isfinite().all() and runs[0].isfinite().all()
    assert torch.equal(runs[0], path(optim_nb.SGD, BEALE, BEALE.x0, steps=20, lr=1e-3))


def test_path_keeps_working_as_chapters_0_to_6_use_it():
    p = path(torch.optim.SGD, quadratic, [-5.0, -2.0], steps=3, lr=0.1)
    assert p.shape == (4, 2)
    assert torch.allclose(p[1], torch.tensor([-4.9, -1.2], dtype=torch.float64))


def test_plot_paths_and_plot_curves_keep_their_signatures():
    ax = plot_paths(quadratic, {"a": path(optim_nb.SGD, quadratic, [-5.0, -2.0], steps=5, lr=0.1)},
                    "title", None, (-5.5, 5.5), (-2.5, 2.5), (0.0, 0.0))
    assert ax.get_title() == "title" and ax.get_legend() is not None
    ax = plot_curves({"a": [3.0, 2.0, 1.0]}, "t", "y", None, True)
    assert ax.get_yscale() == "log" and len(ax.lines) == 1


def test_plot_stage_draws_every_path_on_the_stage_window():
    paths = {f"{cls.__name__} {i}": path(cls, SADDLE, SADDLE.x0, steps=5, lr=0.1, **options)
             for i, (cls, options) in enumerate(OPTIMIZERS)}
    ax = plot_stage(SADDLE, paths)
    assert ax.get_xlim() == SADDLE.xlim and ax.get_ylim() == SADDLE.ylim
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(paths)
    assert ax.get_title() == "saddle"
    assert plot_stage(SADDLE, {}).get_legend() is None      # no paths, no empty legend


def test_plot_sweep_marks_diverged_runs_on_the_ceiling():
    lrs = [1e-2, 1e-1, 1.0, 10.0]
    ax = plot_sweep(lrs, {"a": [1.0, 0.1, float("nan"), math.inf], "b": [2.0, 50.0, 0.5, 0.2]}, ceiling=10.0)
    line_a, cross_a, line_b, cross_b = ax.lines
    assert list(line_a.get_xdata()) == [1e-2, 1e-1] and list(cross_a.get_xdata()) == [1.0, 10.0]
    assert list(cross_a.get_ydata()) == [10.0, 10.0] and cross_a.get_color() == line_a.get_color()
    assert list(cross_b.get_xdata()) == [1e-1] and line_a.get_color() != line_b.get_color()
    assert ax.get_xscale() == ax.get_yscale() == "log"
    # the default ceiling is the largest finite loss: nothing finite is a cross
    ax = plot_sweep(lrs, {"a": [1.0, 0.1, float("nan"), 5.0]})
    assert list(ax.lines[1].get_xdata()) == [1.0]


def test_animation_is_self_contained_html():
    paths = {"SGD": path(optim_nb.SGD, QUADRATIC, QUADRATIC.x0, steps=8, lr=0.3),
             "Adam": path(optim_nb.Adam, QUADRATIC, QUADRATIC.x0, steps=4, lr=0.3)}
    anim = animate_paths(QUADRATIC, paths, every=2)
    html = player_html(anim)
    assert html.count("data:image/png;base64") == 5          # frames 0, 2, 4, 6, 8
    assert "<script src=" not in html and "<link" not in html and "http" not in html
    assert "fa-" not in html and "▶|" in html                # button symbols are plain text
    assert "https://" in anim.to_jshtml()                    # what player_html removes
    # the last frame shows each trail whole, and the shorter run parked at its last point
    trails = [line for line in anim._fig.axes[0].lines if line.get_label() in paths]
    assert [len(t.get_xdata()) for t in trails] == [9, 5]


def test_importing_the_package_does_not_import_matplotlib_but_stages_does():
    code = ("import sys, optim_nb; assert 'matplotlib' not in sys.modules; "
            "import optim_nb.stages; assert 'matplotlib' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names():
    assert set(stages.__all__) >= {"quadratic", "path", "plot_paths", "plot_curves", "Stage", "STAGES",
                                   "rosenbrock", "saddle", "beale", "sweep", "plot_stage", "plot_sweep",
                                   "animate_paths", "player_html"}
