"""Fidelity of the blur, weather, digital and colour corruptions to the original ImageNet-C code.

The reference is ``imagecorruptions-imaug`` where it equals the original, and Pillow itself where the
original calls Pillow (pixelate's BOX up-sampling, JPEG). Images are real photographs (scikit-image).
Differences are measured on the 0..255 scale after the original's truncation to uint8.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from robustart.noise.natural import corrupt
from robustart.noise.natural.params import IMAGENET_PARAMS
from robustart.noise.natural.weather import FROST_FILES, frost_pictures, plasma_fractal, spatter_from_layer
from robustart.noise.seeding import SampleRNG


def _photos():
    from skimage import data

    square = data.astronaut()[::2, ::2][:224, :224]
    other = data.coffee()[100:300, 200:350]  # 200 x 150, not square
    return [np.ascontiguousarray(square), np.ascontiguousarray(other)]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def _to_levels(x: torch.Tensor) -> np.ndarray:
    """The original's ``np.uint8(x * 255)``: truncation (a hair of slack for float32 rounding)."""
    return np.floor(x[0].permute(1, 2, 0).double().numpy() * 255 + 1e-4)


DETERMINISTIC = ["defocus_blur", "gaussian_blur", "zoom_blur", "saturate", "brightness", "contrast"]


@pytest.mark.fidelity
@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("photo", [0, 1], ids=["224x224", "200x150"])
def test_deterministic_corruptions_match_the_reference(name, photo):
    from imagecorruptions import corrupt as reference

    image = _photos()[photo]
    for severity in range(1, 6):
        ours = _to_levels(corrupt(_to_tensor(image), name, severity))
        ref = reference(image, corruption_name=name, severity=severity).astype(np.float64)
        assert np.abs(ours - ref).mean() <= 0.5, (name, severity, np.abs(ours - ref).mean())


@pytest.mark.parametrize("photo", [0, 1], ids=["224x224", "200x150"])
def test_pixelate_is_pillow_box_both_ways(photo):
    from robustart.noise.natural.digital import pixelate_torch

    image = _photos()[photo]
    h, w = image.shape[:2]
    for severity, c in enumerate(IMAGENET_PARAMS["pixelate"], start=1):
        small = Image.fromarray(image).resize((int(w * c), int(h * c)), Image.BOX)
        ref = np.asarray(small.resize((w, h), Image.BOX)).astype(np.float64)
        ours = corrupt(_to_tensor(image), "pixelate", severity)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - ref).max() < 1e-3
        # the torch path (used off the CPU) does Pillow's fixed-point arithmetic exactly
        torch_path = pixelate_torch(_to_tensor(image), c)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(torch_path - ref).max() < 1e-3


def test_jpeg_compression_is_pillow_jpeg():
    image = _photos()[0]
    for severity, quality in enumerate(IMAGENET_PARAMS["jpeg_compression"], start=1):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        ref = np.asarray(Image.open(buffer)).astype(np.float64)
        ours = corrupt(_to_tensor(image), "jpeg_compression", severity)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.fidelity
def test_plasma_fractal_equals_the_reference_given_the_same_draws():
    from imagecorruptions.corruptions import plasma_fractal as reference_plasma

    np.random.seed(3)
    ref = reference_plasma(mapsize=256, wibbledecay=1.7)
    np.random.seed(3)
    ours = plasma_fractal(1, 256, 1.7, lambda shape: torch.from_numpy(np.random.uniform(0, 1, shape))[None])
    assert np.abs(ours[0].numpy() - ref).max() < 1e-5


@pytest.mark.fidelity
def test_plasma_fractal_torch_path_equals_the_compiled_one():
    """Off the CPU the maps are built with batched torch operations; on the same draws they equal the kernel's."""
    from robustart.noise.natural.weather import _plasma_torch, plasma_draws

    draws = torch.rand(3, plasma_draws(64), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    compiled = plasma_fractal(3, 64, 1.5, lambda shape: draws)
    assert torch.allclose(_plasma_torch(draws, 64, 1.5), compiled, atol=1e-6)


@pytest.mark.fidelity
def test_fog_follows_the_original_formula():
    image = _photos()[0]
    x = _to_tensor(image)
    severity, (strength, decay) = 3, IMAGENET_PARAMS["fog"][2]
    out = corrupt(x, "fog", severity, seed=5, sample_ids=[9])
    rng = SampleRNG(5, [9], "fog", severity)
    plasma = plasma_fractal(1, 256, decay, rng.rand)[:, None, :224, :224]
    expected = ((x + strength * plasma) * x.max() / (x.max() + strength)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.fidelity
def test_frost_is_a_crop_of_an_original_frost_picture():
    x = torch.zeros(3, 3, 224, 224)
    severity, (_, weight) = 4, IMAGENET_PARAMS["frost"][3]
    out = corrupt(x, "frost", severity, seed=1, sample_ids=[0, 1, 2])
    pictures = frost_pictures()
    assert len(pictures) == len(FROST_FILES) == 5
    rng = SampleRNG(1, [0, 1, 2], "frost", severity)
    choice, pos = rng.rand(()), rng.rand((2,))
    for i in range(3):
        picture = pictures[int(choice[i] * 5)]
        top, left = int(pos[i, 0] * (picture.shape[0] - 224)), int(pos[i, 1] * (picture.shape[1] - 224))
        crop = torch.from_numpy(picture[top : top + 224, left : left + 224].copy()).permute(2, 0, 1).float() / 255
        assert torch.allclose(out[i], (weight * crop).clamp(0, 1), atol=1e-6)


@pytest.mark.fidelity
def test_frost_pictures_are_the_originals():
    sizes = [p.shape[:2] for p in frost_pictures()]
    assert sizes == [(600, 900), (315, 560), (315, 560), (350, 527), (495, 660)]


@pytest.mark.fidelity
@pytest.mark.parametrize("photo", [0, 1], ids=["224x224", "200x150"])
def test_spatter_equals_the_reference_given_the_same_layer(photo):
    from imagecorruptions import corrupt as reference

    image = _photos()[photo]
    for severity in range(1, 6):
        c = IMAGENET_PARAMS["spatter"][severity - 1]
        np.random.seed(severity)
        ref = reference(image, corruption_name="spatter", severity=severity).astype(np.float64)
        np.random.seed(severity)  # the reference's first draw is the liquid layer
        layer = torch.from_numpy(np.random.normal(size=image.shape[:2], loc=c[0], scale=c[1]))[None]
        ours = _to_levels(spatter_from_layer(_to_tensor(image), c, layer))
        assert np.abs(ours - ref).mean() <= 0.01, (severity, np.abs(ours - ref).mean())


def test_parameter_sets_by_size_and_by_name():
    from robustart.noise.natural.params import CIFAR_PARAMS, PARAMETER_SETS, TINY_PARAMS, parameter_set

    assert parameter_set("auto", 28, 28) is CIFAR_PARAMS and parameter_set("auto", 64, 64) is TINY_PARAMS
    assert parameter_set("auto", 224, 224) is IMAGENET_PARAMS and parameter_set("imagenet", 32, 32) is IMAGENET_PARAMS
    for table in PARAMETER_SETS.values():
        assert set(table) == set(IMAGENET_PARAMS) and all(len(v) == 5 for v in table.values())
    with pytest.raises(ValueError, match="unknown corruption parameter set 'svhn'"):
        parameter_set("svhn", 32, 32)
    x = torch.full((1, 3, 32, 32), 0.5)
    for params, sigma in (("auto", 0.04), ("imagenet", 0.08)):
        residual = corrupt(x, "gaussian_noise", 1, params=params) - x
        assert residual.std().item() == pytest.approx(sigma, rel=0.1)


def test_cifar_pixelate_and_frost_follow_the_cifar_generator():
    import cv2

    image = np.asarray(Image.fromarray(_photos()[0]).resize((32, 32), Image.BILINEAR))
    for severity, c in enumerate((0.95, 0.9, 0.85, 0.75, 0.65), start=1):
        ref = np.asarray(Image.fromarray(image).resize((int(32 * c),) * 2, Image.BOX).resize((32, 32), Image.BOX))
        ours = corrupt(_to_tensor(image), "pixelate", severity)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(ours - ref).max() < 1e-3
    # CIFAR frost crops come from the pictures shrunk to a fifth
    out = corrupt(torch.zeros(1, 3, 32, 32), "frost", 1, seed=2, sample_ids=[4])
    rng = SampleRNG(2, [4], "frost", 1)
    choice, pos = rng.rand(()), rng.rand((2,))
    picture = cv2.resize(frost_pictures()[int(choice[0] * 5)], (0, 0), fx=0.2, fy=0.2)
    top, left = int(pos[0, 0] * (picture.shape[0] - 32)), int(pos[0, 1] * (picture.shape[1] - 32))
    crop = torch.from_numpy(picture[top : top + 32, left : left + 32].copy()).permute(2, 0, 1).float() / 255
    assert torch.allclose(out[0], 0.2 * crop, atol=1e-6)


def test_grey_images_get_grey_frost():
    grey = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    out = corrupt(grey, "frost", 3, seed=1)
    colour = corrupt(grey.expand(-1, 3, -1, -1), "frost", 3, seed=1)
    weights = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    assert out.shape == grey.shape
    assert torch.allclose(out, (colour * weights).sum(1, keepdim=True).clamp(0, 1), atol=1e-6)


def test_released_format_round_trip():
    from robustart.noise import create_noise

    image = _photos()[0]
    x = _to_tensor(image)
    noise = create_noise("imagenet_c", corruptions=["contrast"], severities=[2], released_format=True)
    [condition] = noise.conditions()
    out = noise.apply(x, None, torch.tensor([0]), condition)
    plain = corrupt(x, "contrast", 2)
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(plain[0].permute(1, 2, 0).numpy() * 255)).save(buffer, "JPEG", quality=85, optimize=True)
    ref = np.asarray(Image.open(buffer)).astype(np.float64)
    assert np.abs(out[0].permute(1, 2, 0).double().numpy() * 255 - ref).max() < 1e-3
