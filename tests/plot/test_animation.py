"""Animations: a GIF frame per step (or as many as asked), the paths moving; MP4 needs ffmpeg."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from torch import nn

import lossatlas as la
from lossatlas.plot import animation
from lossatlas.plot.animation import animate, frame_steps

STEPS = 12


def frames_of(path, size: tuple[int, int]) -> list[np.ndarray]:
    """Every frame of a GIF as RGB pixels, after checking the size and that none is blank."""
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size == size
        frames = [np.asarray(f.convert("RGB"), dtype=float) for f in ImageSequence.Iterator(im)]
    for f in frames:
        assert len(np.unique(f.reshape(-1, 3), axis=0)) > 50 and f.std() > 15
    return frames


def moved(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two frames differ outside the step counter's corner (top left)."""
    h, w, _ = a.shape
    changed = np.abs(a - b).sum(-1) > 30
    changed[: h // 8, : w // 3] = False
    return bool(changed.sum() > 3)


@pytest.fixture(scope="module")
def rosen():
    return la.get_function("rosenbrock")


@pytest.fixture(scope="module")
def runs(rosen):
    specs = [("momentum", 2e-3), ("adam", 0.2), ("sgd", 1e-2)]
    out = [la.descend(rosen, [-1.5, 2.0], optimizer=o, lr=lr, steps=STEPS) for o, lr in specs]
    assert out[2].status == "diverged" and out[0].steps_taken == STEPS
    return out


def test_gif_has_a_frame_per_step_and_the_paths_move(tmp_path, rosen, runs):
    out = animate(rosen, runs, tmp_path / "a" / "runs.gif", figsize=(5, 4.4), dpi=50, steps=61)
    assert out == tmp_path / "a" / "runs.gif"
    frames = frames_of(out, (250, 220))
    assert len(frames) == STEPS + 1
    with Image.open(out) as im:
        assert im.info["duration"] == 50  # 20 frames per second
    # Up to step 4 the diverging run flies too; after it, momentum and adam still move.
    assert all(moved(a, b) for a, b in itertools.pairwise(frames))


def test_frames_subsample_and_end_on_the_final_state(tmp_path, rosen, runs):
    options = {"figsize": (5, 4.4), "dpi": 50, "steps": 61}
    few = frames_of(animate(rosen, runs, tmp_path / "few.gif", frames=5, **options), (250, 220))
    every = frames_of(animate(rosen, runs, tmp_path / "all.gif", **options), (250, 220))
    assert len(few) == 5
    assert np.abs(few[-1] - every[-1]).mean() < 1  # the same final picture
    assert np.abs(few[0] - every[0]).mean() < 1
    assert np.abs(few[0] - few[-1]).mean() > 1


def test_frame_steps():
    np.testing.assert_array_equal(frame_steps(13), np.arange(13))
    np.testing.assert_array_equal(frame_steps(13, 5), [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(frame_steps(13, 50), np.arange(13))
    np.testing.assert_array_equal(frame_steps(13, 1), [12])
    for n in range(1, 40):
        for k in range(1, n + 1):
            got = frame_steps(n, k)
            assert len(got) == k and got[-1] == n - 1 and (np.diff(got) > 0).all()


def test_tail_on_a_surface_with_coordinate_paths(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
        x = torch.randn(16, 2)
    problem = la.Problem(model, nn.MSELoss(), (x, x[:, :1] ** 2))
    plane = la.surface(problem, la.random_directions(problem, 2, seed=1), steps=9, quiet=True)
    t = np.linspace(0, 1, 8)
    paths = {"out": np.c_[t, t / 2], "in": np.c_[-t, 0.5 - t]}
    out = animate(plane, paths, tmp_path / "tail.gif", tail=2, figsize=(4, 4), dpi=40, fps=5)
    frames = frames_of(out, (160, 160))
    assert len(frames) == 8
    assert moved(frames[0], frames[-1])


def test_mp4_needs_ffmpeg(tmp_path, rosen, runs, monkeypatch):
    monkeypatch.setattr(animation.shutil, "which", lambda name: None)
    with pytest.raises(
        la.LossatlasError, match=r"ffmpeg is not on the PATH; save as \.gif"
    ) as info:
        animate(rosen, runs, tmp_path / "runs.mp4")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs.mp4").exists()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_with_ffmpeg(tmp_path, rosen, runs):
    out = animate(rosen, runs, tmp_path / "runs.mp4", frames=4, figsize=(4, 4), dpi=40)
    assert out.stat().st_size > 1000 and out.read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"path": "runs.avi"}, "use one of"),
        ({"path": "runs.png"}, "use one of"),
        ({"fps": 0}, "fps must be"),
        ({"fps": float("nan")}, "fps must be"),
        ({"frames": 0}, "frames must be"),
        ({"frames": True}, "frames must be"),
        ({"tail": -1}, "tail must be"),
        ({"dpi": 0}, "dpi"),
        ({"labels": ["one"]}, "1 labels for 3 runs"),
    ],
)
def test_bad_options_raise_one_line_errors(tmp_path, rosen, runs, options, match):
    path = tmp_path / options.pop("path", "runs.gif")
    with pytest.raises(la.LossatlasError, match=match) as info:
        animate(rosen, runs, path, **options)
    assert "\n" not in str(info.value)
    assert not path.exists()
