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

from noise.natural import corrupt
from noise.natural.params import IMAGENET_PARAMS
from noise.natural.weather import FROST_FILES, frost_pictures, plasma_fractal, spatter_from_layer
from noise.seeding import SampleRNG


def _photos():
    from skimage import data

    square = data.astronaut()[::2, ::2][:224, :224]
    other = data.coffee()[100:300, 200:350]  # 200 x 150, not square
    return [np.ascontiguousarray(square), np.ascontiguousarray(other)]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _to_levels(x: torch.Tensor) -> np.ndarray:
    """The original's ``np.uint8(x * 255)``: truncation (a hair of slack for float32 rounding)."""
    return np.floor(x[0].permute(1, 2, 0).double().numpy() * 255 + 1e-4)


DETERMINISTIC = ["defocus_blur", "gaussian_blur", "zoom_blur", "saturate", "brightness", "contrast"]


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
    image = _photos()[photo]
    h, w = image.shape[:2]
    for severity, c in enumerate(IMAGENET_PARAMS["pixelate"], start=1):
        small = Image.fromarray(image).resize((int(w * c), int(h * c)), Image.BOX)
        ref = np.asarray(small.resize((w, h), Image.BOX)).astype(np.float64)
        ours = corrupt(_to_tensor(image), "pixelate", severity)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - ref).max() < 1e-3


def test_jpeg_compression_is_pillow_jpeg():
    image = _photos()[0]
    for severity, quality in enumerate(IMAGENET_PARAMS["jpeg_compression"], start=1):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        ref = np.asarray(Image.open(buffer)).astype(np.float64)
        ours = corrupt(_to_tensor(image), "jpeg_compression", severity)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - ref).max() < 1e-3


def test_plasma_fractal_equals_the_reference_given_the_same_draws():
    from imagecorruptions.corruptions import plasma_fractal as reference_plasma

    np.random.seed(3)
    ref = reference_plasma(mapsize=256, wibbledecay=1.7)
    np.random.seed(3)
    ours = plasma_fractal(1, 256, 1.7, lambda shape: torch.from_numpy(np.random.uniform(0, 1, shape))[None])
    assert np.abs(ours[0].numpy() - ref).max() < 1e-5


def test_fog_follows_the_original_formula():
    image = _photos()[0]
    x = _to_tensor(image)
    severity, (strength, decay) = 3, IMAGENET_PARAMS["fog"][2]
    out = corrupt(x, "fog", severity, seed=5, sample_ids=[9])
    rng = SampleRNG(5, [9], "fog", severity)
    plasma = plasma_fractal(1, 256, decay, rng.rand)[:, None, :224, :224]
    expected = ((x + strength * plasma) * x.max() / (x.max() + strength)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


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


def test_frost_pictures_are_the_originals():
    sizes = [p.shape[:2] for p in frost_pictures()]
    assert sizes == [(600, 900), (315, 560), (315, 560), (350, 527), (495, 660)]


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
