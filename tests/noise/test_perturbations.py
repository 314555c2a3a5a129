"""ImageNet-P sequences (noise.natural.perturbations): frame counts and shapes, the schedules at frames
where they are known exactly (clean, identity, whole-pixel shifts, angle 0), per-image and per-frame
determinism, chunked iteration, the crop protocol, and fidelity to the libraries the original called
(PIL's affine transform as torchvision 0.2 drove it, OpenCV's perspective warp, the spatter code)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from robustart.noise.natural.motion import apply_motion_blur
from robustart.noise.natural.perturbations import (
    NOISE_PERTURBATIONS,
    P_PERTURBATIONS,
    P_TEST,
    P_VALIDATION,
    _tilt_matrix,
    _torchvision_affine_inverse,
    iter_frames,
    num_frames,
    perturbation_frames,
)
from robustart.noise.seeding import SampleRNG
from tests.conftest import fit_photo

# torch single-threaded: on a shared 2-core runner a second intra-op thread mostly waits for a busy core
pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANDOM = ("gaussian_noise", "shot_noise", "speckle_noise", "snow", "spatter")


@functools.cache
def _photo(name: str, h: int, w: int) -> np.ndarray:
    from skimage import data

    return fit_photo(getattr(data, name)(), h, w)


def _batch(*arrays: np.ndarray) -> torch.Tensor:
    """uint8 HWC arrays -> float32 NCHW in [0, 1]."""
    return torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]).float().div(255)


def _photos(size: int = 64) -> torch.Tensor:
    return _batch(*(_photo(n, size, size) for n in ("astronaut", "coffee", "chelsea")))


def _hwc255(frame: torch.Tensor) -> np.ndarray:
    """float CHW in [0, 1] -> float64 HWC on the 0..255 scale."""
    return frame.permute(1, 2, 0).double().numpy() * 255


# ----------------------------------------------------------------------------------------------
# Names, counts, shapes
# ----------------------------------------------------------------------------------------------


def test_names_and_frame_counts():
    assert len(P_TEST) == 10 and len(P_VALIDATION) == 4 and len(set(P_PERTURBATIONS)) == 14
    assert set(NOISE_PERTURBATIONS) == {"gaussian_noise", "shot_noise", "speckle_noise"}
    assert {name: num_frames(name) for name in P_PERTURBATIONS} == {
        name: 41 if name == "translate" else 31 for name in P_PERTURBATIONS
    }


@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_shapes_range_and_motion(name):
    x = _photos()
    frames = perturbation_frames(x, name)
    assert frames.shape == (3, num_frames(name), 3, 64, 64) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    # the sequence moves: consecutive frames differ somewhere, and the ends differ clearly
    steps = (frames[:, 1:] - frames[:, :-1]).abs().flatten(2).amax(2)
    if name == "motion_blur":  # near 90 degrees, 4 degrees apart differ only in taps that round away in 8 bits
        assert (steps > 0).float().mean() > 0.9
    else:
        assert (steps > 0).all(), name
    assert (frames[:, 0] - frames[:, -1]).abs().mean() > 1e-3
    # grey-scale images keep their single channel
    grey = perturbation_frames(x[:2, :1], name, start=3, stop=5)
    assert grey.shape == (2, 2, 1, 64, 64) and grey.min() >= 0 and grey.max() <= 1


def test_float64_input_and_empty_batch():
    x = _photos()[:1]
    assert torch.equal(perturbation_frames(x.double(), "rotate", stop=3), perturbation_frames(x, "rotate", stop=3))
    empty = perturbation_frames(torch.zeros(0, 3, 16, 16), "snow", start=2, stop=6)
    assert empty.shape == (0, 4, 3, 16, 16)


# ----------------------------------------------------------------------------------------------
# Determinism and chunking
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_frames_do_not_depend_on_the_batch(name):
    x = _photos()
    together = perturbation_frames(x, name, seed=5, sample_ids=[10, 11, 12], start=0, stop=6)
    alone = perturbation_frames(x[1:2], name, seed=5, sample_ids=[11], start=0, stop=6)
    assert torch.equal(together[1:2], alone)
    if name in RANDOM:  # a different id or seed gives a different sequence
        other = perturbation_frames(x[1:2], name, seed=5, sample_ids=[12], start=0, stop=6)
        assert not torch.equal(other[:, 1:], alone[:, 1:])
        reseeded = perturbation_frames(x[1:2], name, seed=6, sample_ids=[11], start=0, stop=6)
        assert not torch.equal(reseeded[:, 1:], alone[:, 1:])


@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_chunks_and_ranges_equal_one_call(name):
    x = _photos()[:2]
    full = perturbation_frames(x, name, seed=1)
    chunks = list(iter_frames(x, name, chunk=7, seed=1))
    assert [s for s, _ in chunks] == list(range(0, num_frames(name), 7))
    assert torch.equal(torch.cat([f for _, f in chunks], dim=1), full)
    # random access: frames 9..16 alone equal the same frames of the whole sequence
    assert torch.equal(perturbation_frames(x, name, seed=1, start=9, stop=17), full[:, 9:17])
    # iter_frames over a sub-range
    part = list(iter_frames(x, name, chunk=4, seed=1, start=20, stop=27))
    assert [s for s, _ in part] == [20, 24]
    assert torch.equal(torch.cat([f for _, f in part], dim=1), full[:, 20:27])


def test_chunks_feed_the_sequence_evaluation():
    from torch import nn

    from robustart.evaluation.sequences import score_chunks

    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 10))
    x = _photos()
    pred, top5 = score_chunks(model, iter_frames(x, "translate", chunk=16), torch.device("cpu"))
    assert pred.shape == (3, 41) and top5.shape == (3, 41, 5)
    with torch.inference_mode():
        assert (pred[:, 20] == model(x).argmax(1).numpy()).all()  # frame 20: no shift


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOISE_PERTURBATIONS)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_noise_frame_zero_is_clean(name, difficulty):
    x = _photos()[:2]
    frames = perturbation_frames(x, name, difficulty=difficulty)
    assert torch.equal(frames[:, 0], x)
    assert all(not torch.equal(frames[:, i], x) for i in range(1, 31))
    assert not torch.equal(frames[:, 1], frames[:, 2])  # fresh noise in every frame


@pytest.mark.parametrize("difficulty, sigma", [(1, 0.03), (2, 0.05), (3, 0.08)])
def test_gaussian_noise_sigma(difficulty, sigma):
    grey = torch.full((2, 3, 64, 64), 0.5)
    noise = perturbation_frames(grey, "gaussian_noise", difficulty=difficulty)[:, 1:] - 0.5
    assert abs(noise.std().item() / sigma - 1) < 0.1
    assert abs(noise.mean().item()) < 0.1 * sigma


def test_difficulty_raises_the_noise():
    x = _photos()[:1]
    for name in NOISE_PERTURBATIONS:
        spread = [
            (perturbation_frames(x, name, difficulty=d, stop=4)[:, 1:] - x[:, None]).abs().mean().item()
            for d in (1, 2, 3)
        ]
        assert spread[0] < spread[1] < spread[2], (name, spread)


def test_identity_frames_equal_the_input():
    x = _photos()
    assert torch.equal(perturbation_frames(x, "rotate", start=15, stop=16)[:, 0], x)
    assert torch.equal(perturbation_frames(x, "shear", start=15, stop=16)[:, 0], x)
    assert torch.equal(perturbation_frames(x, "scale", start=24, stop=25)[:, 0], x)  # (2.5 * 24 + 40) / 100 = 1
    assert torch.equal(perturbation_frames(x, "brightness", start=15, stop=16)[:, 0], x)
    assert torch.equal(perturbation_frames(x, "translate", start=20, stop=21)[:, 0], x)
    assert torch.equal(perturbation_frames(x, "zoom_blur", stop=1)[:, 0], x)


@pytest.mark.parametrize("frame", [0, 7, 19, 23, 40])
def test_translate_is_a_whole_pixel_shift(frame):
    x = _photos()
    shift = frame - 20  # along x (columns), content moves right for positive shifts, black comes in
    expected = torch.zeros_like(x)
    if shift >= 0:
        expected[..., shift:] = x[..., : 64 - shift]
    else:
        expected[..., :shift] = x[..., -shift:]
    assert torch.equal(perturbation_frames(x, "translate", start=frame, stop=frame + 1)[:, 0], expected)


def test_brightness_schedule():
    x = _photos()
    frames = perturbation_frames(x, "brightness")
    value = frames.amax(dim=2)  # HSV value of each frame
    v0 = x.amax(dim=1)
    for i in (0, 5, 25, 30):
        c = (i - 15) * 0.02
        assert torch.allclose(value[:, i], (v0 + c).clamp(0, 1), atol=1e-5), i
    # hue and saturation are kept where V stays inside (0, 1)
    ratio = frames[:, 20] / frames[:, 20].amax(dim=1, keepdim=True).clamp(min=1e-6)
    keep = ((v0 + 0.1) < 1) & (v0 > 0.05)
    original = x / x.amax(dim=1, keepdim=True).clamp(min=1e-6)
    assert torch.allclose(ratio.permute(1, 0, 2, 3)[:, keep], original.permute(1, 0, 2, 3)[:, keep], atol=1e-4)


def test_motion_blur_angles():
    x = _photos()
    frames = perturbation_frames(x, "motion_blur", start=0, stop=31)
    assert torch.equal(frames[:, 30], apply_motion_blur(x, 10, 3, [0.0] * 3))
    assert torch.equal(frames[:, 0], apply_motion_blur(x, 10, 3, [-120.0] * 3))
    assert torch.equal(frames[:, 17], apply_motion_blur(x, 10, 3, [-52.0] * 3))


def test_gaussian_blur_grows():
    x = _photos()
    frames = perturbation_frames(x, "gaussian_blur")
    # a stronger blur removes more detail: the distance to the image grows with the frame
    distance = (frames - x[:, None]).abs().mean(dim=(0, 2, 3, 4))
    assert (distance[1:] > distance[:-1]).all()


def test_zoom_blur_is_a_running_mean():
    x = _photos()[:1]
    frames = perturbation_frames(x, "zoom_blur")
    # frame i = (i * frame_{i-1} + zoom_i) / (i + 1): the mean moves ever less from frame to frame
    steps = (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(0, 2, 3, 4))
    assert steps[-1] < steps[5]
    # frame 1 is the mean of the image and its zoom by 1.004
    from robustart.noise.natural.perturbations import _Sampler

    zoom = _Sampler(x, (0, 0, 64, 64)).pil_affine(_torchvision_affine_inverse(64, 64, scale=1.004))
    assert torch.allclose(frames[:, 1], (x + zoom) / 2, atol=1e-6)


def test_snow_layer_is_fixed_and_turns():
    x = _photos()[:1]
    frames = perturbation_frames(x, "snow", seed=2)
    # the whitened image is the same in every frame, the layer is one draw blurred at 4 i - 150 degrees
    from robustart.noise.natural.motion import apply_snow

    normal = SampleRNG(2, [0], "imagenet_p", "snow", 1).randn((64, 64))
    for i in (0, 30):
        expected = apply_snow(x, (0.05, 0.3, 3, 0.5, 14, 4, 0.85), normal, [4.0 * i - 150])
        assert torch.equal(frames[:, i], expected)


# ----------------------------------------------------------------------------------------------
# Fidelity to the original's libraries
# ----------------------------------------------------------------------------------------------


def _pil_reference(arr: np.ndarray, name: str, i: int) -> np.ndarray:
    """The original's frame through PIL with torchvision 0.2's matrix, as float64 HWC 0..255."""
    from PIL import Image

    img = Image.fromarray(arr)
    h, w = arr.shape[:2]
    params = {
        "rotate": {"angle": i - 15},
        "scale": {"scale": (i * 2.5 + 40) / 100},
        "shear": {"shear": i - 15},
        "translate": {"translate": (i - 20, 0)},
    }[name]
    m = _torchvision_affine_inverse(h, w, **params)
    resample = Image.NEAREST if name == "translate" else Image.BILINEAR
    return np.asarray(img.transform(img.size, Image.AFFINE, m, resample)).astype(np.float64)


@pytest.mark.fidelity
@pytest.mark.parametrize("name, frames", [("rotate", (0, 8, 30)), ("scale", (0, 11, 30)), ("shear", (0, 30))])
def test_affine_matches_pil(name, frames):
    arr = _photo("astronaut", 72, 80)  # non-square, to catch swapped axes
    x = _batch(arr)
    for i in frames:
        ours = _hwc255(perturbation_frames(x, name, start=i, stop=i + 1)[0, 0])
        diff = ours - _pil_reference(arr, name, i)  # PIL truncates its interpolation to uint8
        assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3, (name, i, diff.min(), diff.max())


@pytest.mark.fidelity
def test_translate_matches_pil():
    arr = _photo("coffee", 72, 80)
    x = _batch(arr)
    for i in (0, 13, 40):
        ours = _hwc255(perturbation_frames(x, "translate", start=i, stop=i + 1)[0, 0])
        assert np.abs(ours - _pil_reference(arr, "translate", i)).max() < 1e-3


def test_rotation_direction_is_clockwise():
    # torchvision 0.2: positive angles turn the picture clockwise (on screen, y down)
    x = torch.zeros(1, 1, 65, 65)
    x[..., 32, 40:60] = 1  # a bar right of the centre
    frame = perturbation_frames(x, "rotate", start=30, stop=31)[0, 0, 0]  # +15 degrees
    rows = torch.nonzero(frame > 0.5)[:, 0]
    assert rows.float().mean() > 33  # the bar's right end moved down


@pytest.mark.fidelity
def test_tilt_matches_opencv():
    import cv2

    arr = _photo("chelsea", 72, 80)
    x = _batch(arr)
    h, w = arr.shape[:2]
    for i in (0, 9, 30):
        ours = _hwc255(perturbation_frames(x, "tilt", start=i, stop=i + 1)[0, 0])
        ref = cv2.warpPerspective(arr, _tilt_matrix(h, w, i - 15).numpy(), (w, h)).astype(np.float64)
        assert np.abs(ours - ref).max() < 0.5 + 1e-3, i  # OpenCV rounds to uint8


@pytest.mark.fidelity
def test_tilt_matrix_is_the_originals():
    h, w, degrees = 72, 80, -12
    t = np.deg2rad(degrees)
    f = np.sqrt(w**2 + h**2)
    c, s = np.cos(t), np.sin(t)
    to_3d = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])
    ry = np.array([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1]])
    away = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    project = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    expected = project @ away @ rx @ ry @ to_3d
    assert np.allclose(_tilt_matrix(h, w, degrees).numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.fidelity
def test_zoom_blur_matches_pil_running_mean():
    from PIL import Image

    arr = _photo("chelsea", 64, 64)
    img = Image.fromarray(arr)
    total = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    for k in range(1, 5):
        m = _torchvision_affine_inverse(64, 64, scale=1 + 0.004 * k)
        zoomed = img.transform(img.size, Image.AFFINE, m, Image.BILINEAR)
        total += torch.from_numpy(np.asarray(zoomed, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    ours = perturbation_frames(_batch(arr), "zoom_blur", start=4, stop=5)[0, 0]
    diff = (ours - total / 5) * 255  # PIL truncates each zoomed image
    assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3


@pytest.mark.fidelity
def test_spatter_matches_the_original_code():
    """A transcription of the original's spatter loop (OpenCV relief, dripping by np.convolve) fed the same
    normal draws gives the same frames."""
    import cv2
    from skimage.filters import gaussian

    arr = _photo("coffee", 64, 96)
    ours = perturbation_frames(_batch(arr), "spatter", seed=3, sample_ids=[7], stop=12)[0]
    normal = SampleRNG(3, [7], "imagenet_p", "spatter", 1).randn((64, 96))[0].double().numpy()
    x = arr.astype(np.float32) / 255
    layer = gaussian(normal * 0.27 + 0.65, sigma=3.7)
    layer[layer < 0.69] = 0
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    for i in range(12):
        level = (layer * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
        dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)[1]
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
        m = level * dist
        m = m / m.max() * 0.6
        expected = np.clip(x + m[..., None] * (np.array([175, 238, 238], dtype=np.float32) / 255), 0, 1)
        assert np.abs(_hwc255(ours[i]) / 255 - expected).max() < 1e-6, i
        layer = np.apply_along_axis(lambda col: np.convolve(col, [0.05, 0.1, 0.15, 0.7], mode="same"), 0, layer)


# ----------------------------------------------------------------------------------------------
# The 256 -> 224 protocol
# ----------------------------------------------------------------------------------------------


def test_crop_protocol_256_to_224():
    arr = _photo("astronaut", 256, 256)
    x = _batch(arr)
    centre = x[..., 16:240, 16:240]
    # geometric perturbations act on the full image, then the centre is cut out
    rotated = perturbation_frames(x, "rotate", crop=224, start=14, stop=16)
    assert rotated.shape == (1, 2, 3, 224, 224)
    assert torch.equal(rotated[:, 1], centre)  # frame 15: 0 degrees
    ours = _hwc255(rotated[0, 0])
    diff = ours - _pil_reference(arr, "rotate", 14)[16:240, 16:240]
    assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3
    # the full image fills the crop's corners, where a rotated 224 px crop would be black
    # (at -5 degrees the crop's corner is 112 (cos 5° + sin 5°) = 121 px from the centre along each axis)
    assert perturbation_frames(x, "rotate", crop=224, start=10, stop=11)[0, 0, :, :3, :3].amax(0).min() > 0.05
    assert perturbation_frames(centre, "rotate", start=10, stop=11)[0, 0, :, :3, :3].max() == 0
    # tilt too, on the full 256 px image (focal length from 256, not 224)
    tilted = perturbation_frames(x, "tilt", crop=224, start=3, stop=4)[0, 0]
    import cv2

    # Against OpenCV's float32 warp, not its uint8 one: the uint8 output is rounded after a fixed-point
    # interpolation whose result depends on the code path (measured on one AMD EPYC with opencv 5.1: 0.50117 from
    # exact with its SIMD path, 0.49999 with cv2.setUseOptimized(False)), so it sits on the bound of 0.5 that
    # rounding alone gives. The float32 warp differed from ours by 3e-5 (SIMD) and 0.0037 (scalar path, which
    # quantises coordinates to 1/32 px); 0.01 allows for both.
    ref = cv2.warpPerspective(arr.astype(np.float32), _tilt_matrix(256, 256, -12).numpy(), (256, 256))[16:240, 16:240]
    assert np.abs(_hwc255(tilted) - ref).max() < 0.01
    # photometric perturbations act on the crop: the same frames as perturbing the 224 px crop itself
    for name in ("speckle_noise", "brightness", "motion_blur"):
        cropped = perturbation_frames(x, name, crop=224, seed=4, start=29, stop=31)
        assert torch.equal(cropped, perturbation_frames(centre, name, seed=4, start=29, stop=31)), name


def test_crop_on_non_square_images_uses_torchvision_offsets():
    x = _batch(_photo("coffee", 41, 50))
    frames = perturbation_frames(x, "brightness", crop=32, start=15, stop=16)
    # CenterCrop: top = round((41 - 32) / 2) = round(4.5) = 4 (half to even), left = 9
    assert torch.equal(frames[:, 0], x[..., 4:36, 9:41])
    shifted = perturbation_frames(x, "translate", crop=32, start=22, stop=23)[:, 0]
    assert torch.equal(shifted, x[..., 4:36, 7:39])  # moved 2 px right: the crop shows columns 7..38


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_errors():
    x = _photos()[:1, :, :16, :16]
    with pytest.raises(ValueError, match="unknown perturbation 'fog'; valid names: gaussian_noise, shot_noise"):
        perturbation_frames(x, "fog")
    with pytest.raises(ValueError, match="unknown perturbation"):
        num_frames("saturate")
    with pytest.raises(ValueError, match=r"difficulty of gaussian_noise must be an integer in 1\.\.3"):
        perturbation_frames(x, "gaussian_noise", difficulty=4)
    with pytest.raises(ValueError, match="difficulty of rotate must be 1"):
        perturbation_frames(x, "rotate", difficulty=2)
    with pytest.raises(ValueError, match="difficulty"):
        perturbation_frames(x, "shot_noise", difficulty=True)
    with pytest.raises(ValueError, match="float NCHW batch with 1 or 3 channels"):
        perturbation_frames(x[0], "rotate")
    with pytest.raises(ValueError, match="float NCHW batch with 1 or 3 channels"):
        perturbation_frames(x[:, :2], "rotate")
    with pytest.raises(ValueError, match="float NCHW batch"):
        perturbation_frames((x * 255).to(torch.uint8), "rotate")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        perturbation_frames(x * 2, "rotate")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        perturbation_frames(x - 0.5, "rotate")
    with pytest.raises(ValueError, match=r"translate has 41 frames: need 0 <= start <= stop <= 41"):
        perturbation_frames(x, "translate", stop=42)
    with pytest.raises(ValueError, match="rotate has 31 frames"):
        perturbation_frames(x, "rotate", start=-1)
    with pytest.raises(ValueError, match="rotate has 31 frames"):
        perturbation_frames(x, "rotate", start=5, stop=4)
    with pytest.raises(ValueError, match=r"crop must be None or an integer in 1\.\.16"):
        perturbation_frames(x, "rotate", crop=17)
    with pytest.raises(ValueError, match="sample_ids"):
        perturbation_frames(x, "rotate", sample_ids=[0, 1])
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        iter_frames(x, "rotate", chunk=0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        iter_frames(x, "blur")  # at the call, before iterating
    with pytest.raises(TypeError, match="unexpected keyword"):
        iter_frames(x, "rotate", severity=1)


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_cuda(name):
    x = _photos()
    gpu = perturbation_frames(x.cuda(), name, seed=3, crop=56)
    assert gpu.device.type == "cuda" and gpu.shape == (3, num_frames(name), 3, 56, 56)
    assert gpu.min() >= 0 and gpu.max() <= 1
    chunks = torch.cat([f for _, f in iter_frames(x.cuda(), name, chunk=5, seed=3, crop=56)], dim=1)
    assert torch.equal(chunks, gpu)
    alone = perturbation_frames(x[2:].cuda(), name, seed=3, sample_ids=[2], crop=56)
    # batched matrix products (the Gaussian blurs) may round differently for another batch size on a GPU
    torch.testing.assert_close(alone, gpu[2:], atol=1e-5, rtol=0)
    if name not in RANDOM:  # deterministic: the same frames as on the CPU, up to float rounding
        cpu = perturbation_frames(x, name, seed=3, crop=56)
        tolerance = 1 / 255 + 1e-4 if name == "motion_blur" else 1e-4  # 8-bit rounding of ImageMagick's output
        assert (gpu.cpu() - cpu).abs().max() <= tolerance
        assert math.isclose((gpu.cpu() - cpu).abs().mean().item(), 0, abs_tol=1e-4)


# ----------------------------------------------------------------------------------------------
# Small-image parameter sets (CIFAR-10-P, Tiny-ImageNet-P)
# ----------------------------------------------------------------------------------------------


@functools.cache
def _grey_photo(name: str, size: int) -> np.ndarray:
    """A skimage.data photograph as grey uint8, centre part resized to ``size x size``."""
    from skimage import color, data

    photo = getattr(data, name)()
    if photo.ndim == 3:
        photo = np.round(color.rgb2gray(photo) * 255).astype(np.uint8)
    return fit_photo(photo, size, size)


def _grey_photos(size: int = 28) -> torch.Tensor:
    """Fashion-MNIST-like batch: three grey photographs, ``(3, 1, size, size)`` in [0, 1]."""
    arrays = [_grey_photo(n, size) for n in ("camera", "astronaut", "coffee")]
    return torch.stack([torch.from_numpy(a.copy())[None] for a in arrays]).float().div(255)


def _shifted(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``x`` moved ``shift`` whole pixels along x (right for positive), black coming in."""
    out = torch.zeros_like(x)
    w = x.shape[-1]
    if shift >= 0:
        out[..., shift:] = x[..., : w - shift]
    else:
        out[..., :shift] = x[..., -shift:]
    return out


def test_parameter_set_tables_and_frame_counts():
    from robustart.noise.natural.perturbations import P_PARAMETER_SETS

    assert set(P_PARAMETER_SETS) == {"imagenet", "cifar", "tiny"}
    for table in P_PARAMETER_SETS.values():  # every set has every perturbation, with the same fields
        assert set(table) == set(P_PERTURBATIONS)
        assert all(set(table[n]) == set(P_PARAMETER_SETS["imagenet"][n]) for n in P_PERTURBATIONS)
    cifar = {name: num_frames(name, "cifar") for name in P_PERTURBATIONS}
    assert cifar == {name: {"motion_blur": 21, "translate": 16}.get(name, 31) for name in P_PERTURBATIONS}
    assert {num_frames(name, params="tiny") for name in P_PERTURBATIONS} == {31}
    assert num_frames("translate", "imagenet") == num_frames("translate") == 41
    x = _grey_photos()[:1]
    assert perturbation_frames(x, "motion_blur", params="cifar").shape == (1, 21, 1, 28, 28)
    assert perturbation_frames(x, "translate", params="tiny").shape == (1, 31, 1, 28, 28)


# noise level per difficulty 1..3: make_cifar_p.py and make_tinyimagenet_p.py
SMALL_NOISE_LEVELS = {
    "cifar": {"gaussian_noise": (0.02, 0.04, 0.06), "shot_noise": (700, 400, 200), "speckle_noise": (0.05, 0.07, 0.1)},
    "tiny": {"gaussian_noise": (0.025, 0.05, 0.075), "shot_noise": (500, 250, 125), "speckle_noise": (0.05, 0.1, 0.15)},
}


@pytest.mark.parametrize("params", ["cifar", "tiny"])
def test_small_set_noise_levels(params):
    levels = SMALL_NOISE_LEVELS[params]
    grey = torch.full((2, 1, 48, 48), 0.5)
    for name, per_difficulty in levels.items():
        for difficulty, level in enumerate(per_difficulty, start=1):
            frames = perturbation_frames(grey, name, difficulty=difficulty, params=params, stop=6)
            assert torch.equal(frames[:, 0], grey)  # frame 0 clean
            # spread at 0.5: Gaussian sigma, speckle 0.5 sigma, shot noise sqrt(0.5 / c) (Poisson(0.5 c) / c)
            expected = {"gaussian_noise": level, "speckle_noise": 0.5 * level}.get(name) or math.sqrt(0.5 / level)
            spread = (frames[:, 1:] - 0.5).std().item()
            assert abs(spread / expected - 1) < 0.1, (name, difficulty, spread, expected)


@pytest.mark.parametrize("params, size, zero", [("cifar", 28, 7), ("cifar", 32, 7), ("tiny", 64, 15)])
def test_small_set_translate_offsets(params, size, zero):
    x = _grey_photos(size) if size == 28 else _photos(size)
    last = num_frames("translate", params) - 1
    for frame in (0, zero, zero + 3, last):
        expected = _shifted(x, frame - zero)
        assert torch.equal(
            perturbation_frames(x, "translate", params=params, start=frame, stop=frame + 1)[:, 0], expected
        )
    # the ends of the sweep: CIFAR-10-P -7 .. +8 px, Tiny-ImageNet-P -15 .. +15 px
    assert (0 - zero, last - zero) == {"cifar": (-7, 8), "tiny": (-15, 15)}[params]


@pytest.mark.parametrize("params", ["cifar", "tiny"])
def test_small_set_identity_frames(params):
    x = _photos(32 if params == "cifar" else 64)

    def frame(name, i):
        return perturbation_frames(x, name, params=params, start=i, stop=i + 1)[:, 0]

    assert torch.equal(frame("rotate", 15), x)
    assert torch.equal(frame("shear", 15), x)
    assert torch.equal(frame("brightness", 15), x)
    assert torch.equal(frame("zoom_blur", 0), x)
    # scale 1: CIFAR-10-P (2 * 15 + 70) / 100, Tiny-ImageNet-P (2.5 * 24 + 40) / 100
    assert torch.equal(frame("scale", 15 if params == "cifar" else 24), x)
    assert not torch.equal(frame("scale", 14), x)


def test_cifar_schedules():
    x = _photos(32)

    def frame(name, i, params="cifar"):
        return perturbation_frames(x, name, params=params, start=i, stop=i + 1)[:, 0]

    # motion blur: radius 6, sigma 1.8, angle 9 (i - 20) degrees
    assert torch.equal(frame("motion_blur", 20), apply_motion_blur(x, 6, 1.8, [0.0] * 3))
    assert torch.equal(frame("motion_blur", 0), apply_motion_blur(x, 6, 1.8, [-180.0] * 3))
    # brightness: 1.5 % of the value range per frame
    for i in (0, 9, 30):
        assert torch.allclose(frame("brightness", i).amax(1), (x.amax(1) + 0.015 * (i - 15)).clamp(0, 1), atol=1e-5)
    # tilt: 0.75 degree per frame, so CIFAR frame 27 (9 degrees) is ImageNet frame 24
    assert torch.equal(frame("tilt", 27), frame("tilt", 24, "imagenet"))
    assert torch.equal(frame("tilt", 3), frame("tilt", 6, "imagenet"))
    # scale: 0.70 .. 1.30 in steps of 0.02; frame 5 (0.8) is ImageNet's frame 16 ((2.5 * 16 + 40) / 100)
    assert torch.equal(frame("scale", 5), frame("scale", 16, "imagenet"))
    # rotation and shear: one degree per frame as in ImageNet-P
    assert torch.equal(frame("rotate", 4), frame("rotate", 4, "imagenet"))
    assert torch.equal(frame("shear", 29), frame("shear", 29, "imagenet"))


@pytest.mark.fidelity
@pytest.mark.parametrize("params, start, step, truncate", [("cifar", 0.3, 0.015, 7.0), ("tiny", 0.35, 0.014, 7.0)])
def test_small_set_gaussian_blur_matches_skimage(params, start, step, truncate):
    from skimage.filters import gaussian

    arr = _photo("chelsea", 32, 40)
    frames = perturbation_frames(_batch(arr), "gaussian_blur", params=params)[0]
    for i in (0, 17, 30):
        ref = gaussian(arr / 255.0, sigma=start + step * i, truncate=truncate, channel_axis=-1, mode="nearest")
        assert np.abs(_hwc255(frames[i]) / 255 - ref).max() < 1e-5, i


@pytest.mark.parametrize(
    "params, snow, radius, sigma, step",
    [("cifar", (0.05, 0.3, 2, 0.5, 10, 2, 0.85), 6, 1.8, 9), ("tiny", (0.05, 0.28, 2, 0.5, 10, 2.5, 0.85), 14, 3, 5)],
)
def test_small_set_snow_and_motion_blur(params, snow, radius, sigma, step):
    from robustart.noise.natural.motion import apply_snow

    x = _photos(32 if params == "cifar" else 64)[:2]
    frames = perturbation_frames(x, "snow", params=params, seed=2, sample_ids=[4, 5])
    normal = SampleRNG(2, [4, 5], "imagenet_p", "snow", 1).randn(tuple(x.shape[-2:]))
    for i in (0, 13, 30):  # the same layer in every frame, blurred at 4 i - 150 degrees
        assert torch.equal(frames[:, i], apply_snow(x, snow, normal, [4.0 * i - 150] * 2))
    last = num_frames("motion_blur", params) - 1  # angle 0 at the last frame, ``step`` degrees apart
    blurred = perturbation_frames(x, "motion_blur", params=params, start=last - 1, stop=last + 1)
    assert torch.equal(blurred[:, 1], apply_motion_blur(x, radius, sigma, [0.0] * 2))
    assert torch.equal(blurred[:, 0], apply_motion_blur(x, radius, sigma, [float(-step)] * 2))


def test_drip_is_numpys_same_convolution():
    from robustart.noise.natural.perturbations import _drip

    layer = np.random.default_rng(0).random((9, 5))
    for kernel in ((0.2, 0.8), (0.05, 0.1, 0.15, 0.7)):
        ref = np.apply_along_axis(lambda col, k=kernel: np.convolve(col, k, mode="same"), 0, layer)
        assert np.allclose(_drip(torch.from_numpy(layer), kernel).numpy(), ref, rtol=0, atol=1e-15)


@pytest.mark.fidelity
@pytest.mark.parametrize("params, loc, scale", [("cifar", 0.6, 0.265), ("tiny", 0.6, 0.25)])
def test_small_set_spatter_matches_the_original_code(params, loc, scale):
    """The small scripts' spatter (layer N(loc, scale), blur sigma 1.75, cut at 0.7, drip [0.2, 0.8]) written
    out with OpenCV and numpy on the same normal draws."""
    import cv2
    from skimage.filters import gaussian

    size = 32 if params == "cifar" else 64
    arr = _photo("coffee", size, size)
    ours = perturbation_frames(_batch(arr), "spatter", params=params, seed=0, sample_ids=[0], stop=8)[0]
    normal = SampleRNG(0, [0], "imagenet_p", "spatter", 1).randn((size, size))[0].double().numpy()
    x = arr.astype(np.float32) / 255
    layer = gaussian(normal * scale + loc, sigma=1.75)
    layer[layer < 0.7] = 0
    assert (layer > 1 / 255).any()  # this seed has drops
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    for i in range(8):
        level = (layer * 255).astype(np.uint8)
        edges = cv2.distanceTransform(255 - cv2.Canny(level, 50, 150), cv2.DIST_L2, 5)
        edges = cv2.equalizeHist(cv2.blur(cv2.threshold(edges, 20, 20, cv2.THRESH_TRUNC)[1], (3, 3)).astype(np.uint8))
        relief = cv2.blur(cv2.filter2D(edges, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
        wet = level * relief
        wet = wet / wet.max() * 0.6 if wet.max() > 0 else wet
        expected = np.clip(x + wet[..., None] * (np.array([175, 238, 238], dtype=np.float32) / 255), 0, 1)
        assert np.abs(_hwc255(ours[i]) / 255 - expected).max() < 1e-6, i
        layer = np.apply_along_axis(lambda col: np.convolve(col, [0.2, 0.8], mode="same"), 0, layer)


@pytest.mark.fidelity
def test_auto_follows_the_imagenet_c_rule():
    from robustart.noise.natural.params import PARAMETER_SETS, parameter_set
    from robustart.noise.natural.perturbations import resolve_params

    for h, w in ((28, 28), (32, 32), (48, 40), (49, 49), (64, 64), (64, 85), (128, 128), (129, 100), (224, 224)):
        assert PARAMETER_SETS[resolve_params("auto", h, w)] is parameter_set("auto", h, w), (h, w)
    assert resolve_params("tiny", 224, 224) == "tiny"

    def frames(x, **kwargs):
        return perturbation_frames(x, "translate", **kwargs).shape[1]  # 16 / 31 / 41 frames tell the sets apart

    assert frames(_grey_photos(28)[:1], params="auto") == 16  # Fashion-MNIST size: CIFAR
    assert frames(_photos(32)[:1], params="auto") == 16
    assert frames(_photos(64)[:1], params="auto") == 31  # Tiny-ImageNet
    assert frames(torch.zeros(1, 1, 224, 224), params="auto") == 41  # ImageNet
    assert frames(torch.zeros(1, 1, 256, 256), params="auto", crop=224) == 41
    assert frames(torch.zeros(1, 1, 72, 96), params="auto", crop=64) == 31  # by the frames' size
    x = _grey_photos(28)
    auto = perturbation_frames(x, "shot_noise", params="auto", seed=1, stop=4)
    assert torch.equal(auto, perturbation_frames(x, "shot_noise", params="cifar", seed=1, stop=4))
    chunks = list(iter_frames(x, "motion_blur", chunk=8, params="auto"))
    assert [s for s, _ in chunks] == [0, 8, 16] and chunks[-1][1].shape[1] == 5  # CIFAR's 21 frames


@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_cifar_chunks_on_fashion_mnist_sized_grey_images(name):
    x = _grey_photos(28)
    n = num_frames(name, "cifar")
    full = perturbation_frames(x, name, seed=1, params="cifar")
    assert full.shape == (3, n, 1, 28, 28) and full.min() >= 0 and full.max() <= 1
    chunks = list(iter_frames(x, name, chunk=5, seed=1, params="cifar"))
    assert [s for s, _ in chunks] == list(range(0, n, 5))
    assert torch.equal(torch.cat([f for _, f in chunks], dim=1), full)
    assert torch.equal(perturbation_frames(x, name, seed=1, params="cifar", start=9, stop=16), full[:, 9:16])
    if name != "spatter":  # the sequence moves (CIFAR's spatter may leave a 28 px photo dry)
        assert (full[:, 0] - full[:, -1]).abs().amax() > 0.01


def test_parameter_set_errors():
    x = _photos()[:1, :, :16, :16]
    with pytest.raises(
        ValueError, match="unknown ImageNet-P parameter set 'mnist'; valid: imagenet, cifar, tiny, auto"
    ):
        perturbation_frames(x, "rotate", params="mnist")
    with pytest.raises(ValueError, match="valid: imagenet, cifar, tiny, auto"):
        perturbation_frames(x, "rotate", params=None)
    with pytest.raises(ValueError, match="unknown ImageNet-P parameter set 'CIFAR'"):
        iter_frames(x, "rotate", params="CIFAR")  # at the call, before iterating
    with pytest.raises(ValueError, match="unknown ImageNet-P parameter set"):
        num_frames("rotate", "huge")
    with pytest.raises(ValueError, match="depends on the image size"):
        num_frames("rotate", "auto")
    with pytest.raises(ValueError, match="unknown ImageNet-P parameter set"):
        from robustart.noise.natural.perturbations import resolve_params

        resolve_params("small", 32, 32)
    with pytest.raises(ValueError, match=r"translate has 16 frames: need 0 <= start <= stop <= 16.*cifar"):
        perturbation_frames(x, "translate", params="cifar", stop=17)
    with pytest.raises(ValueError, match="motion_blur has 21 frames"):
        perturbation_frames(x, "motion_blur", params="auto", start=22)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", P_PERTURBATIONS)
def test_cuda_cifar_set(name):
    x = _grey_photos(28)
    gpu = perturbation_frames(x.cuda(), name, seed=3, params="cifar")
    assert gpu.device.type == "cuda" and gpu.shape == (3, num_frames(name, "cifar"), 1, 28, 28)
    chunks = torch.cat([f for _, f in iter_frames(x.cuda(), name, chunk=6, seed=3, params="auto")], dim=1)
    assert torch.equal(chunks, gpu)
    if name not in RANDOM:
        cpu = perturbation_frames(x, name, seed=3, params="cifar")
        tolerance = 1 / 255 + 1e-4 if name == "motion_blur" else 1e-4
        assert (gpu.cpu() - cpu).abs().max() <= tolerance
