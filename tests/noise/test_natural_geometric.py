"""Glass blur and elastic transform: the batched torch ports against literal numpy/cv2/scipy
transcriptions of Hendrycks's original ``make_imagenet_c.py`` fed the same random numbers, against
the ``imagecorruptions`` reference statistically, and the corruption contract (shape, range,
per-sample randomness)."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from imagecorruptions import corrupt as reference_corrupt
from scipy.ndimage import map_coordinates
from skimage import data
from skimage.filters import gaussian

from robustart.noise.natural.geometric import (
    elastic_noise,
    elastic_transform,
    elastic_transform_with_noise,
    glass_blur,
    glass_blur_with_offsets,
    glass_offsets,
)
from robustart.noise.natural.params import IMAGENET_PARAMS
from robustart.noise.seeding import SampleRNG

GLASS = IMAGENET_PARAMS["glass_blur"]
_OPENCV_EXACT_WARP = tuple(int(v) for v in cv2.__version__.split(".")[:2]) >= (4, 11)
ELASTIC = IMAGENET_PARAMS["elastic_transform"]


def _to_torch(img: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float32 1CHW in [0, 1], as a data loader would give it."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """float 1CHW in [0, 1] -> float64 HWC on the 0..255 scale."""
    return x[0].permute(1, 2, 0).double().numpy() * 255


def _photo(name: str, size: int = 224) -> np.ndarray:
    img = getattr(data, name)()
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


# ----------------------------------------------------------------------------------------------
# Literal transcriptions of the original (random draws passed in instead of np.random)
# ----------------------------------------------------------------------------------------------


def original_glass_blur(img: np.ndarray, c: tuple, offsets: np.ndarray) -> np.ndarray:
    """make_imagenet_c.py glass_blur, with ``np.random.randint`` replaced by ``offsets[i, h-d-1, w-d-1]``."""
    x = np.uint8(gaussian(np.array(img) / 255.0, sigma=c[0], channel_axis=-1) * 255)
    height, width = x.shape[:2]
    for i in range(c[2]):
        for h in range(height - c[1], c[1], -1):
            for w in range(width - c[1], c[1], -1):
                dx, dy = offsets[i, h - c[1] - 1, w - c[1] - 1]
                h_prime, w_prime = h + dy, w + dx
                # swap
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255


def original_elastic_transform(
    img: np.ndarray, c: tuple, jitter: np.ndarray, ux: np.ndarray, uy: np.ndarray
) -> np.ndarray:
    """make_imagenet_c.py elastic_transform, with its three ``np.random.uniform`` draws passed in
    (``jitter`` in [-c[2], c[2]), ``ux`` and ``uy`` in [-1, 1))."""
    image = np.array(img, dtype=np.float32) / 255.0
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32(
        [
            center_square + square_size,
            [center_square[0] + square_size, center_square[1] - square_size],
            center_square - square_size,
        ]
    )
    pts2 = pts1 + jitter.astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(ux, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(uy, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


# ----------------------------------------------------------------------------------------------
# Glass blur
# ----------------------------------------------------------------------------------------------


def test_numpy_pixel_swap_is_a_copy():
    """The premise of the port: on an H x W x 3 array the original's "swap" copies and leaves the source."""
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    before = x.copy()
    x[0, 0], x[1, 2] = x[1, 2], x[0, 0]
    assert np.array_equal(x[0, 0], before[1, 2]) and np.array_equal(x[1, 2], before[1, 2])


@pytest.mark.fidelity
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_matches_original_loop(severity):
    c = GLASS[severity - 1]
    img = np.ascontiguousarray(_photo("astronaut", 96)[:56, :72])  # not square: rows and columns differ
    x = _to_torch(img)
    offsets = glass_offsets(x, c, SampleRNG(0, [0], "glass_blur", severity))
    ours = _to_numpy(glass_blur_with_offsets(x, c, offsets))
    expected = original_glass_blur(img, c, offsets[0].numpy())
    # the shuffle and the uint8 truncation are reproduced exactly; only float32 output rounding remains
    assert np.abs(ours - expected).max() < 1e-3
    assert np.array_equal(np.uint8(ours.round()), np.uint8(expected.round()))


def test_glass_blur_copy_chains_matter():
    """Resolving copy chains is needed: treating each pass as a simultaneous gather differs from the loop."""
    c = GLASS[4]
    img = _photo("coffee", 64)
    x = _to_torch(img)
    offsets = glass_offsets(x, c, SampleRNG(1, [0], "glass_blur", 5))
    expected = original_glass_blur(img, c, offsets[0].numpy())
    # a chain-free port: every processed pixel reads its source's value from before the pass
    q = np.uint8(gaussian(img / 255.0, sigma=c[0], channel_axis=-1) * 255)
    d = c[1]
    for i in range(c[2]):
        rows, cols = np.meshgrid(np.arange(d + 1, 64 - d + 1), np.arange(d + 1, 64 - d + 1), indexing="ij")
        src = q[rows + offsets[0, i, ..., 1].numpy(), cols + offsets[0, i, ..., 0].numpy()]
        q = q.copy()
        q[rows, cols] = src
    naive = np.clip(gaussian(q / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255
    assert np.abs(naive - expected).mean() > 0.5
    assert np.abs(_to_numpy(glass_blur_with_offsets(x, c, offsets)) - expected).max() < 1e-3


def test_glass_offsets_cover_randint_range():
    c = GLASS[4]
    offsets = glass_offsets(torch.zeros(2, 3, 40, 48), c, SampleRNG(0, [0, 1], "glass_blur", 5))
    assert offsets.shape == (2, c[2], 40 - 2 * c[1], 48 - 2 * c[1], 2)
    assert not offsets.dtype.is_floating_point and not offsets.dtype.is_complex
    assert set(offsets.unique().tolist()) == set(range(-c[1], c[1]))


@pytest.mark.fidelity
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_matches_reference_statistically(severity):
    c = GLASS[severity - 1]
    img = _photo(("astronaut", "coffee", "chelsea")[severity % 3])
    # imagecorruptions.corrupt returns uint8 (truncated, as the original saved it): compare like with like
    ours = np.uint8(_to_numpy(glass_blur(_to_torch(img), c, SampleRNG(0, [0], "glass_blur", severity))))
    ours = ours.astype(np.float64)
    # seeded reference draws keep the test deterministic
    ref_a = reference_corrupt(img, corruption_name="glass_blur", severity=severity, seed=1).astype(np.float64)
    ref_b = reference_corrupt(img, corruption_name="glass_blur", severity=severity, seed=2).astype(np.float64)
    between_reference = np.abs(ref_a - ref_b).mean()
    assert between_reference > 0.5  # two draws do differ
    assert np.abs(ours - ref_a).mean() <= 1.2 * between_reference
    # and the blur level is the reference's: the same distance from the clean image within 5%
    # (single draws of either implementation scatter by about +-3%)
    clean = img.astype(np.float64)
    assert np.abs(ours - clean).mean() == pytest.approx(np.abs(ref_a - clean).mean(), rel=0.05)


# ----------------------------------------------------------------------------------------------
# Elastic transform
# ----------------------------------------------------------------------------------------------


@pytest.mark.fidelity
@pytest.mark.parametrize(("severity", "crop"), list(itertools.product([1, 2, 3, 4, 5], ["square", "wide"])))
def test_elastic_transform_matches_original(severity, crop):
    c = ELASTIC[severity - 1]
    img = _photo("chelsea") if crop == "square" else np.ascontiguousarray(data.coffee()[80:176, 100:260])
    x = _to_torch(img)
    jitter, ux, uy = elastic_noise(x, c, SampleRNG(3, [0], "elastic_transform", severity))
    ours = _to_numpy(elastic_transform_with_noise(x, c, jitter, ux, uy))
    expected = original_elastic_transform(img, c, jitter[0].numpy(), ux[0].double().numpy(), uy[0].double().numpy())
    assert np.abs(ours - expected).mean() <= 0.5
    # OpenCV >= 4.11 warps float images at exact coordinates, as the port does, so only float
    # rounding remains (measured max 0.003 levels); older OpenCV rounds them to 1/32 pixel
    assert np.abs(ours - expected).max() <= (0.05 if _OPENCV_EXACT_WARP else 8)
    # the corruption is not a no-op, so the match above is not trivial
    assert np.abs(expected - img).mean() > 2


# ----------------------------------------------------------------------------------------------
# Contract
# ----------------------------------------------------------------------------------------------

FUNCTIONS = {"glass_blur": glass_blur, "elastic_transform": elastic_transform}


def _batch(n: int = 3, size: tuple[int, int] = (40, 52)) -> torch.Tensor:
    """Real photo crops (flat random noise would hide blur and warps)."""
    crops = [_photo(name, 160)[: size[0], : size[1]] for name in ("astronaut", "coffee", "chelsea")]
    return torch.cat([_to_torch(crops[i % 3]) for i in range(n)])


@pytest.mark.parametrize(("name", "severity"), list(itertools.product(FUNCTIONS, [1, 2, 3, 4, 5])))
def test_shape_dtype_range(name, severity):
    x = _batch(2)
    out = FUNCTIONS[name](x, IMAGENET_PARAMS[name][severity - 1], SampleRNG(0, [0, 1], name, severity))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()
    assert (out - x).abs().mean() > 1e-3


@pytest.mark.parametrize("name", FUNCTIONS)
def test_batch_invariance_and_seeds(name):
    c = IMAGENET_PARAMS[name][0]
    x = _batch(4)
    full = FUNCTIONS[name](x, c, SampleRNG(7, [10, 11, 12, 13], name, 1))
    part = FUNCTIONS[name](x[2:4], c, SampleRNG(7, [12, 13], name, 1))
    alone = FUNCTIONS[name](x[1:2], c, SampleRNG(7, [11], name, 1))
    assert torch.allclose(full[2:4], part, atol=1e-6)
    assert torch.allclose(full[1:2], alone, atol=1e-6)
    again = FUNCTIONS[name](x, c, SampleRNG(7, [10, 11, 12, 13], name, 1))
    assert torch.equal(full, again)
    other = FUNCTIONS[name](x, c, SampleRNG(8, [10, 11, 12, 13], name, 1))
    assert (other - full).abs().mean() > 1e-3


@pytest.mark.fidelity
def test_glass_blur_distance_grows_with_severity_as_in_original():
    """mean |out - x| per severity follows the reference's within 3%, and grows with severity.

    The original itself is not strictly monotone: severity 3 (sigma 1, delta 2, 3 passes) moves
    these photos more than severity 4 (sigma 1.1, delta 3, 2 passes), about 13.8 vs 13.5 levels, and
    severities 1 and 2 are within 1%; those two pairs are therefore not ordered here.
    """
    photos = [_photo(name) for name in ("astronaut", "coffee", "chelsea")]
    x = torch.cat([_to_torch(p) for p in photos])
    ours, reference = [], []
    for s in range(1, 6):
        out = glass_blur(x, GLASS[s - 1], SampleRNG(0, [0, 1, 2], "glass_blur", s))
        # truncated to uint8 like the reference's output
        ours.append(((out * 255).floor() - x * 255).abs().mean().item())
        ref = [
            reference_corrupt(p, corruption_name="glass_blur", severity=s, seed=i).astype(np.float64) - p
            for i, p in enumerate(photos)
        ]
        reference.append(np.mean([np.abs(r).mean() for r in ref]))
    assert ours == pytest.approx(reference, rel=0.03), (ours, reference)
    d1, d2, d3, d4, d5 = ours
    assert max(d1, d2) < min(d3, d4) and max(d3, d4) < d5, ours


@pytest.mark.fidelity
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", FUNCTIONS)
def test_cuda_matches_cpu_given_same_draws(name):
    x = _batch(2)
    c = IMAGENET_PARAMS[name][4]
    rng = SampleRNG(0, [0, 1], name, 5)
    if name == "glass_blur":
        offsets = glass_offsets(x, c, rng)
        cpu, gpu = glass_blur_with_offsets(x, c, offsets), glass_blur_with_offsets(x.cuda(), c, offsets.cuda())
    else:
        noise = elastic_noise(x, c, rng)
        cpu = elastic_transform_with_noise(x, c, *noise)
        gpu = elastic_transform_with_noise(x.cuda(), c, *(t.cuda() for t in noise))
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-4
    out = FUNCTIONS[name](x.cuda(), c, SampleRNG(0, [0, 1], name, 5, device="cuda"))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
