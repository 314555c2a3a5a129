"""Motion blur and snow: the blur matches the ``imagecorruptions`` port of ImageMagick's motion blur at the
same angle on real photographs, snow's deterministic part matches the original's maths given the same
draws, and snow's statistics match the reference implementation's."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch

from robustart.noise.natural.motion import (
    apply_motion_blur,
    apply_snow,
    clipped_zoom,
    motion_blur,
    motion_blur_kernel_offsets,
    snow,
)
from robustart.noise.natural.params import IMAGENET_PARAMS
from robustart.noise.seeding import SampleRNG
from tests.conftest import fit_photo

# torch single-threaded: on a shared 2-core runner a second intra-op thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ref = pytest.importorskip("imagecorruptions.corruptions")
imagecorruptions = pytest.importorskip("imagecorruptions")

ANGLES = (-40.0, -7.5, 0.0, 30.0, 45.0)


@functools.lru_cache(maxsize=1)
def _photos() -> dict[str, np.ndarray]:
    """Real photographs (scikit-image's samples): three 224 x 224 and one non-square 160 x 200."""
    from skimage import data

    return {
        "astronaut": fit_photo(data.astronaut(), 224, 224),
        "coffee": fit_photo(data.coffee(), 224, 224),
        "chelsea": fit_photo(data.chelsea(), 224, 224),
        "chelsea_160x200": fit_photo(data.chelsea(), 160, 200),
    }


def _to_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float32 NCHW in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float().div(255)
    return (t[None] if t.ndim == 3 else t).permute(0, 3, 1, 2).contiguous()


def _to_255(x: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] -> float64 NHWC on the 0..255 scale."""
    return x.permute(0, 2, 3, 1).double().numpy() * 255


@pytest.mark.fidelity
@pytest.mark.parametrize("radius, sigma", IMAGENET_PARAMS["motion_blur"])
def test_kernel_weights_match_reference(radius, sigma):
    weights, dy, dx = motion_blur_kernel_offsets(radius, sigma, 30.0)
    expected = ref.getMotionBlurKernel(ref.getOptimalKernelWidth1D(radius, sigma), sigma)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights.shape == dy.shape == dx.shape == (2 * radius + 1,)
    # tap 0 reads the pixel itself; at 30° the line runs along +columns and +rows
    assert dy[0] == dx[0] == 0
    assert dx[-1] == math.ceil(2 * radius * math.cos(math.radians(30)) - 0.5)
    assert np.all(np.diff(dx) >= 0) and np.all(np.diff(dy) >= 0)


@pytest.mark.fidelity
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea", "chelsea_160x200"])
def test_motion_blur_matches_reference_at_same_angle(photo, severity):
    radius, sigma = IMAGENET_PARAMS["motion_blur"][severity - 1]
    img = _photos()[photo]
    # one batch, one angle per image: also checks that per-sample offsets go to the right image
    x = _to_batch(np.stack([img] * len(ANGLES)))
    ours = _to_255(apply_motion_blur(x, radius, sigma, torch.tensor(ANGLES)))
    raw = _to_255(apply_motion_blur(x, radius, sigma, torch.tensor(ANGLES), quantize=False))
    for k, angle in enumerate(ANGLES):
        expected = ref._motion_blur(img, radius, sigma, angle)  # float on the 0..255 scale
        # ours is ImageMagick's uint8 output (rounded): same as rounding the reference's float
        assert np.abs(ours[k] - np.floor(expected + 0.5)).mean() <= 0.01, angle
        assert np.abs(ours[k] - expected).mean() <= 0.5, angle
        # without the uint8 steps the blur itself agrees to float32 precision
        assert np.abs(raw[k] - expected).max() <= 1e-3, angle


def test_motion_blur_drops_taps_beyond_a_small_image():
    # radius 20 reaches 40 px: beyond a 32 px side the reference stops summing (without renormalising)
    img = fit_photo(_photos()["coffee"], 40, 32)
    angles = (-45.0, 0.0, 20.0)
    assert np.abs(motion_blur_kernel_offsets(20, 15, 0.0)[2]).max() >= img.shape[1]  # some taps are dropped
    ours = _to_255(apply_motion_blur(_to_batch(np.stack([img] * 3)), 20, 15, torch.tensor(angles), quantize=False))
    for k, angle in enumerate(angles):
        np.testing.assert_allclose(ours[k], ref._motion_blur(img, 20, 15, angle), atol=1e-3)


def _reference_clipped_zoom(layer: np.ndarray, zoom: float) -> np.ndarray:
    """The original's ``clipped_zoom`` (centre crop, scipy zoom, centre trim), per axis."""
    from scipy.ndimage import zoom as scipy_zoom

    h, w = layer.shape
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    # mode='nearest' equals the default 'constant' inside the map, without its edge rounding artefact
    zoomed = scipy_zoom(layer[top : top + ch, left : left + cw], zoom, order=1, mode="nearest")
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top : trim_top + h, trim_left : trim_left + w]


@pytest.mark.fidelity
@pytest.mark.parametrize("shape", [(224, 224), (160, 200)])
def test_clipped_zoom_matches_scipy(shape):
    layer = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(0))
    for zoom in sorted({c[2] for c in IMAGENET_PARAMS["snow"]}):
        ours = clipped_zoom(layer, zoom)
        assert ours.shape == layer.shape
        for k in range(2):
            expected = _reference_clipped_zoom(layer[k, 0].double().numpy(), zoom)
            np.testing.assert_allclose(ours[k, 0].numpy(), expected, atol=1e-4)


def _reference_snow(img: np.ndarray, c: tuple, normal: np.ndarray, angle: float) -> np.ndarray:
    """The original's snow given its draws, on the 0..1 scale, with the reference port's motion blur."""
    import cv2

    x = img.astype(np.float32) / 255
    layer = _reference_clipped_zoom(c[0] + c[1] * normal.astype(np.float64), c[2])
    layer[layer < c[3]] = 0
    pixels = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # the 'L' PNG
    layer = np.floor(ref._motion_blur(pixels, c[4], c[5], angle) + 0.5)[..., None] / 255  # uint8 back
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


@pytest.mark.fidelity
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("photo", ["astronaut", "chelsea_160x200"])
def test_snow_matches_reference_maths_given_draws(photo, severity):
    c = IMAGENET_PARAMS["snow"][severity - 1]
    img = _photos()[photo]
    h, w = img.shape[:2]
    normal = torch.randn(2, h, w, generator=torch.Generator().manual_seed(severity))
    angles = (-120.0, -60.0)
    ours = _to_255(apply_snow(_to_batch(np.stack([img, img])), c, normal, torch.tensor(angles)))
    for k, angle in enumerate(angles):
        expected = _reference_snow(img, c, normal[k].numpy(), angle) * 255
        diff = np.abs(ours[k] - expected)
        # float32 zoom vs float64: a seed pixel can rarely fall on the other side of the threshold
        assert diff.mean() <= 0.05, angle
        assert (diff > 1e-3).mean() <= 0.005, angle


@pytest.mark.fidelity
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_snow_statistics_match_reference(severity):
    draws = 6
    img = _photos()["coffee"]
    x = _to_batch(np.stack([img] * draws))
    out = snow(x, IMAGENET_PARAMS["snow"][severity - 1], SampleRNG(0, range(draws), "snow", severity))
    ours = np.floor(_to_255(out))  # the original truncates to uint8 on saving, like the reference's return
    refs = []
    for k in range(draws + 1):
        np.random.seed(k)
        refs.append(imagecorruptions.corrupt(img, corruption_name="snow", severity=severity).astype(np.float64))
    ours_vs_ref = np.mean([np.abs(ours[k] - refs[k]).mean() for k in range(draws)])
    ref_vs_ref = np.mean([np.abs(refs[k + 1] - refs[k]).mean() for k in range(draws)])
    assert ours_vs_ref <= 1.05 * ref_vs_ref
    residual = (ours - img).mean(axis=(0, 1, 2))
    ref_residual = (np.stack(refs[:draws]) - img).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(residual, ref_residual, rtol=0.05, atol=0.5)


@pytest.mark.parametrize("name", ["motion_blur", "snow"])
@pytest.mark.parametrize("shape", [(224, 224), (160, 200), (32, 40)])
def test_shape_dtype_range_and_per_sample_randomness(name, shape):
    fn = motion_blur if name == "motion_blur" else snow
    c = IMAGENET_PARAMS[name][4]
    x = torch.rand(4, 3, *shape, generator=torch.Generator().manual_seed(0))
    ids = [10, 11, 12, 13]
    full = fn(x, c, SampleRNG(7, ids, name, 5))
    assert full.shape == x.shape and full.dtype == x.dtype and full.device == x.device
    assert full.min() >= 0 and full.max() <= 1
    assert torch.equal(full, fn(x, c, SampleRNG(7, ids, name, 5)))
    # an image's result depends on its own id only, not on the rest of the batch
    part = fn(x[1:3], c, SampleRNG(7, ids[1:3], name, 5))
    torch.testing.assert_close(full[1:3], part, atol=1e-6, rtol=0)
    other_seed = fn(x, c, SampleRNG(8, ids, name, 5))
    assert (other_seed - full).abs().mean() > 1e-3


@pytest.mark.fidelity
def test_random_draws_map_to_the_original_distributions():
    # motion blur: angle ~ U(-45°, 45°); snow: an H x W map of N(0, 1) (scaled inside), then angle ~ U(-135°, -45°)
    img = _photos()["chelsea_160x200"]
    x = _to_batch(np.stack([img, img, img]))
    ids = [3, 4, 5]
    c = IMAGENET_PARAMS["motion_blur"][1]
    u = SampleRNG(1, ids, "motion_blur", 2).rand((1,))[:, 0].double()
    expected = apply_motion_blur(x, c[0], c[1], -45 + 90 * u)
    assert torch.equal(motion_blur(x, c, SampleRNG(1, ids, "motion_blur", 2)), expected)
    c = IMAGENET_PARAMS["snow"][1]
    rng = SampleRNG(1, ids, "snow", 2)
    normal = rng.randn(img.shape[:2])
    u = rng.rand((1,))[:, 0].double()
    expected = apply_snow(x, c, normal, -135 + 90 * u)
    assert torch.equal(snow(x, c, SampleRNG(1, ids, "snow", 2)), expected)


def test_motion_blur_angle_is_drawn_per_image():
    img = _photos()["astronaut"]
    x = _to_batch(np.stack([img, img]))
    out = motion_blur(x, IMAGENET_PARAMS["motion_blur"][2], SampleRNG(0, [0, 1], "motion_blur", 3))
    assert (out[0] - out[1]).abs().mean() > 1e-3


def test_motion_blur_severity_is_monotone():
    x = _to_batch(np.stack([_photos()[p] for p in ("astronaut", "coffee", "chelsea")]))
    distance = [
        (motion_blur(x, c, SampleRNG(0, [0, 1, 2], "motion_blur", s)) - x).abs().mean().item()
        for s, c in enumerate(IMAGENET_PARAMS["motion_blur"], start=1)
    ]
    assert all(a < b for a, b in itertools.pairwise(distance)), distance


@pytest.mark.fidelity
def test_parameters_are_the_originals():
    assert IMAGENET_PARAMS["motion_blur"] == ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
    assert IMAGENET_PARAMS["snow"][2] == (0.55, 0.3, 4, 0.9, 12, 8, 0.7)
    assert len(IMAGENET_PARAMS["snow"]) == 5 and all(len(c) == 7 for c in IMAGENET_PARAMS["snow"])


@pytest.mark.fidelity
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_given_same_draws():
    img = _photos()["chelsea_160x200"]
    x = _to_batch(np.stack([img, img]))
    angles = torch.tensor([-30.0, 12.5])
    cpu = apply_motion_blur(x, 20, 15, angles)
    gpu = apply_motion_blur(x.cuda(), 20, 15, angles.cuda())
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() <= 1 / 255 + 1e-6
    assert (gpu.cpu() - cpu).abs().mean() < 1e-3
    normal = torch.randn(2, *img.shape[:2], generator=torch.Generator().manual_seed(0))
    c = IMAGENET_PARAMS["snow"][4]
    cpu = apply_snow(x, c, normal, [-100.0, -50.0])
    gpu = apply_snow(x.cuda(), c, normal.cuda(), [-100.0, -50.0])
    assert (gpu.cpu() - cpu).abs().mean() < 1e-3
    out = snow(x.cuda(), c, SampleRNG(0, [0, 1], "snow", 5, device="cuda"))
    assert out.device.type == "cuda" and out.min() >= 0 and out.max() <= 1
