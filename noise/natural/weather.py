"""ImageNet-C weather: fog (diamond-square plasma), frost (crops of the original frost pictures) and
spatter (water drops or mud from a thresholded random layer)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from robustart.noise.seeding import SampleRNG
from robustart.noise.threads import cpu_map

#: the original draws the frost picture with ``np.random.randint(5)``, so frost6 is never used
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def plasma_draws(mapsize: int) -> int:
    """How many uniform draws one ``mapsize x mapsize`` plasma map takes: three grids of ``(mapsize / step)^2``
    midpoints (squares, then the two diamond sets) for each step ``mapsize, mapsize / 2, ..., 2``."""
    return sum(3 * (mapsize // (1 << k)) ** 2 for k in range(1, mapsize.bit_length()))


def plasma_fractal(
    batch: int, mapsize: int, wibbledecay: float, uniform: Callable[[tuple[int, ...]], torch.Tensor], device=None
) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], one per sample, shape ``(batch, mapsize, mapsize)``.

    Follows the original step by step, in float64 as the original, including its ``wibble * U(-wibble,
    wibble)`` noise term, its order of additions and the wrap-around neighbours of ``np.roll``. All
    draws of a map are taken at once (:func:`plasma_draws` of them) and used in the original's order,
    which gives the original's maps when fed the original's random stream.

    Args:
        batch: number of maps.
        mapsize: side, a power of two.
        wibbledecay: divisor of the noise amplitude at each level.
        uniform: ``uniform(shape) -> U[0, 1) draws`` of shape ``(batch, *shape)``.
        device: where the maps are made; on the CPU a compiled kernel builds each map.

    Returns:
        float32 maps.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    draws = uniform((plasma_draws(mapsize),))
    if torch.device(device or "cpu").type == "cpu":
        from robustart.noise.natural.kernels import kernels

        maps = torch.empty(batch, mapsize, mapsize, dtype=torch.float32)
        source, target, kernel = draws.cpu().numpy(), maps.numpy(), kernels()["plasma"]
        cpu_map(lambda i: kernel(source[i], float(wibbledecay), target[i]), range(batch))
        return maps
    return _plasma_torch(draws.to(device=device, dtype=torch.float64), mapsize, wibbledecay)


def _plasma_torch(draws: torch.Tensor, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """:func:`plasma_fractal` as batched torch operations on the device of ``draws`` (``(batch, count)``)."""
    batch = len(draws)
    maps = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=draws.device)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        nonlocal used
        count = total.shape[1] * total.shape[2]
        u = draws[:, used : used + count].reshape(total.shape)
        used += count
        return total / 4 + wibble * (-wibble + 2 * wibble * u)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        maps[:, 0::step, half::step] = wibbled_mean(
            (centres + centres.roll(1, dims=1)) + (corners + corners.roll(-1, dims=2))
        )
        maps[:, half::step, 0::step] = wibbled_mean(
            (centres + centres.roll(1, dims=2)) + (corners + corners.roll(-1, dims=1))
        )
        step //= 2
        wibble /= wibbledecay
    flat = maps.view(batch, -1)
    flat -= flat.min(dim=1, keepdim=True).values
    flat /= flat.max(dim=1, keepdim=True).values
    return maps.to(torch.float32)


def fog(x: torch.Tensor, c: tuple[float, float], rng: SampleRNG) -> torch.Tensor:
    """Fog: add ``c[0]`` times a plasma fractal (decay ``c[1]``), then rescale by ``max / (max + c[0])``.

    The map side is the next power of two of the image's longer side (256 for 224 px); ``max`` is
    the image's maximum over all channels, taken before the fog is added.
    """
    n, _, h, w = x.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()
    plasma = plasma_fractal(n, mapsize, c[1], rng.rand, device=x.device)[:, None, :h, :w]
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + c[0] * plasma) * max_val / (max_val + c[0])).clamp_(0, 1)


@functools.lru_cache(maxsize=1)
def frost_pictures() -> tuple[np.ndarray, ...]:
    """The original frost pictures as RGB uint8 arrays, read from the installed ``imagecorruptions``
    package (``pip install imagecorruptions-imaug``), which ships byte-identical copies."""
    import importlib.resources

    import cv2

    try:
        folder = importlib.resources.files("imagecorruptions") / "frost"
    except ModuleNotFoundError:
        raise ImportError("frost needs the original frost pictures: pip install imagecorruptions-imaug") from None
    pictures = []
    for name in FROST_FILES:
        with importlib.resources.as_file(folder / name) as path:
            bgr = cv2.imread(str(path))  # drops alpha, like the original
        if bgr is None:
            raise FileNotFoundError(f"cannot read frost picture {name} from {folder}")
        pictures.append(np.ascontiguousarray(bgr[..., ::-1]))
    return tuple(pictures)


@functools.lru_cache(maxsize=32)
def _frost_picture(index: int, h: int, w: int, scale: float) -> np.ndarray:
    """Frost picture ``index`` resized by ``scale`` (bilinear, as the CIFAR and Tiny-ImageNet originals do),
    then enlarged (cubic) only if the image is still larger than it (224 px never is)."""
    import cv2

    picture = frost_pictures()[index]
    if scale != 1:
        picture = cv2.resize(picture, (0, 0), fx=scale, fy=scale)
    ph, pw = picture.shape[:2]
    if ph >= h and pw >= w:
        return picture
    scale = max(h / ph, w / pw)
    return cv2.resize(picture, (int(np.ceil(pw * scale)), int(np.ceil(ph * scale))), interpolation=cv2.INTER_CUBIC)


def frost(x: torch.Tensor, c: tuple[float, ...], rng: SampleRNG) -> torch.Tensor:
    """Frost: ``c[0] * x + c[1] * crop``, a random crop of a random original frost picture, resized by
    ``c[2]`` first when given (CIFAR-10-C: 0.2, Tiny-ImageNet-C: 0.3)."""
    n, _, h, w = x.shape
    choice = rng.rand(())
    pos = rng.rand((2,))
    crops = []
    for i in range(n):
        index = min(int(choice[i] * len(FROST_FILES)), len(FROST_FILES) - 1)
        picture = _frost_picture(index, h, w, float(c[2]) if len(c) > 2 else 1.0)
        # np.random.randint(0, size - h): a start in [0, size - h), 0 when the picture fits exactly
        top = int(pos[i, 0] * max(picture.shape[0] - h, 1))
        left = int(pos[i, 1] * max(picture.shape[1] - w, 1))
        crops.append(torch.from_numpy(picture[top : top + h, left : left + w].copy()))
    layer = torch.stack(crops).permute(0, 3, 1, 2).to(x.device, torch.float32) / 255
    return (c[0] * x + c[1] * layer).clamp_(0, 1)


_WATER = (175 / 255, 238 / 255, 238 / 255)  # the original adds these to channels 0, 1, 2 of the RGB data
_MUD = (63 / 255, 42 / 255, 20 / 255)
_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def _water_relief(liquid8: np.ndarray) -> np.ndarray:
    """The original's OpenCV chain on one uint8 liquid layer: edges, distance, equalisation, emboss."""
    import cv2

    dist = 255 - cv2.Canny(liquid8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, _EMBOSS)
    return cv2.blur(dist, (3, 3)).astype(np.float32)


def spatter_from_layer(x: torch.Tensor, c: tuple, layer: torch.Tensor) -> torch.Tensor:
    """Spatter given the random liquid layer ``layer`` (``(batch, H, W)`` draws of N(c[0], c[1])).

    Mode 0 (water) runs the original's OpenCV chain (Canny, distance transform, histogram equalisation)
    on the CPU, image by image; mode 1 (mud) stays on the input's device.
    """
    from robustart.noise.natural.blur import gaussian_filter

    liquid = gaussian_filter(layer[:, None].to(x.device, torch.float32), float(c[2]))
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    if c[5] == 0:
        # (liquid * 255).astype(np.uint8): truncation
        liquid8 = (liquid * 255).clamp(0, 255).to(torch.uint8)[:, 0].cpu().numpy()
        masks = []
        for one in liquid8:
            m = one.astype(np.float32) * _water_relief(one)
            masks.append(m / m.max() if m.max() > 0 else m)
        mask = torch.from_numpy(np.stack(masks))[:, None].to(x.device) * c[4]
        colour = torch.tensor(_WATER, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x + mask * colour[:, : x.shape[1]]).clamp_(0, 1)
    mask = gaussian_filter((liquid > c[3]).to(x.dtype), float(c[4]))
    mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)
    colour = torch.tensor(_MUD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    if x.shape[1] == 1:  # grey images get the grey value of the mud (the original's rgb2gray)
        colour = (colour * torch.tensor((0.2989, 0.5870, 0.1140), device=x.device).view(1, 3, 1, 1)).sum(1, True)
    return (x * (1 - mask) + colour * mask).clamp_(0, 1)


def spatter(x: torch.Tensor, c: tuple, rng: SampleRNG) -> torch.Tensor:
    """Spatter: water drops (severities 1-3) or mud (4-5) from a thresholded, blurred random layer."""
    layer = rng.randn(tuple(x.shape[-2:])) * c[1] + c[0]
    return spatter_from_layer(x, c, layer)
