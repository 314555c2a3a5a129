"""Image codecs of four libraries: decode compressed bytes, and encode arrays for an in-memory round trip.

Every function works on ``uint8`` arrays ``(H, W, C)`` with ``C`` = 3 (RGB) or 1 (grey). Each library is
called as a user's data pipeline would call it, with its own defaults:

- ``pil``: ``Image.open(...).convert("RGB")``; encodes JPEG at quality 75 with 4:2:0 chroma subsampling.
- ``opencv``: ``cv2.imdecode(..., IMREAD_COLOR)`` then BGR to RGB (it applies EXIF orientation, as
  ``cv2.imread`` does); encodes JPEG at quality 95.
- ``torchvision``: ``torchvision.io.decode_image`` (libjpeg-turbo / libpng inside torchvision); encodes
  JPEG at quality 75.
- ``ffmpeg``: libavcodec through PyAV (one container per image in memory, never a subprocess); its
  YUV -> RGB conversion uses swscale's bicubic filter, the ``ffmpeg`` command line's default. Encodes
  with the ``mjpeg`` encoder's defaults (4:2:0). Needs the optional extra ``robustart[system]``.
"""

from __future__ import annotations

import io
import re

import numpy as np

#: the decoders, in the order of the results tables
DECODERS: tuple[str, ...] = ("pil", "opencv", "torchvision", "ffmpeg")
#: in-memory round-trip formats
CODECS: tuple[str, ...] = ("jpeg", "png")
#: the extra that installs each optional library
_EXTRAS = {"ffmpeg": ("av", "PyAV", "robustart[system]")}


class DecodeError(ValueError):
    """Bytes that a library cannot decode (a corrupt or unsupported file)."""


def check_available(decoder: str) -> None:
    """Raise a ``ValueError`` naming the valid decoders, or an ``ImportError`` naming the extra to install."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; valid decoders: {', '.join(DECODERS)}")
    if decoder in _EXTRAS:
        module, library, extra = _EXTRAS[decoder]
        try:
            __import__(module)
        except ImportError:
            raise ImportError(
                f'decoder {decoder!r} needs {library}, which is not installed: pip install "{extra}"'
            ) from None


def _channels(array: np.ndarray) -> np.ndarray:
    """``(H, W)`` -> ``(H, W, 1)``; anything else unchanged."""
    return array[..., None] if array.ndim == 2 else array


# ---------------------------------------------------------------------------------------------------- decoding


def _decode_pil(data: bytes, grey: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return _channels(np.asarray(image.convert("L" if grey else "RGB")))
    except (OSError, UnidentifiedImageError) as err:
        raise DecodeError(f"Pillow cannot decode the image: {err}") from None


def _decode_opencv(data: bytes, grey: bool) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError("OpenCV cannot decode the image")
    return _channels(image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _decode_torchvision(data: bytes, grey: bool) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_image

    try:
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB
        )
    except RuntimeError as err:
        raise DecodeError(f"torchvision cannot decode the image: {str(err).splitlines()[0]}") from None
    return image.permute(1, 2, 0).numpy()


#: leading bytes -> libavcodec decoder, for the common formats: a bare codec context is some 30x faster than
#: opening a container (format probing) per image; other formats go through the container
_AV_SIGNATURES = ((b"\xff\xd8\xff", "mjpeg"), (b"\x89PNG\r\n\x1a\n", "png"))


def _decode_ffmpeg(data: bytes, grey: bool) -> np.ndarray:
    import av

    codec = next((name for magic, name in _AV_SIGNATURES if data.startswith(magic)), None)
    try:
        if codec is not None:
            frames = av.CodecContext.create(codec, "r").decode(av.Packet(data))
        else:
            with av.open(io.BytesIO(data)) as container:
                frames = list(container.decode(video=0))
        if not frames:
            raise DecodeError("FFmpeg decoded no frame from the image")
        return _channels(frames[0].to_ndarray(format="gray" if grey else "rgb24", interpolation="BICUBIC"))
    except av.FFmpegError as err:
        raise DecodeError(f"FFmpeg cannot decode the image: {err}") from None


_DECODE = {"pil": _decode_pil, "opencv": _decode_opencv, "torchvision": _decode_torchvision, "ffmpeg": _decode_ffmpeg}


def decode(decoder: str, data: bytes, grey: bool = False) -> np.ndarray:
    """The pixels of the compressed image ``data`` as ``decoder`` reads them: ``uint8 (H, W, 3)`` RGB, or
    ``(H, W, 1)`` with ``grey``. Undecodable bytes raise :class:`DecodeError`."""
    return _DECODE[decoder](data, grey)


# ---------------------------------------------------------------------------------------------------- encoding


def _encode_pil(image: np.ndarray, codec: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, format=codec.upper())
    return out.getvalue()


def _encode_opencv(image: np.ndarray, codec: str) -> bytes:
    import cv2

    pixels = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg" if codec == "jpeg" else ".png", pixels)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {codec}")
    return data.tobytes()


def _encode_torchvision(image: np.ndarray, codec: str) -> bytes:
    import torch
    from torchvision.io import encode_jpeg, encode_png

    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return (encode_jpeg(chw) if codec == "jpeg" else encode_png(chw)).numpy().tobytes()


def _encode_ffmpeg(image: np.ndarray, codec: str) -> bytes:
    from fractions import Fraction

    import av

    grey = image.shape[-1] == 1
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(image[..., 0] if grey else image), format="gray" if grey else "rgb24"
    )
    context = av.CodecContext.create("mjpeg" if codec == "jpeg" else "png", "w")
    context.width, context.height, context.time_base = image.shape[1], image.shape[0], Fraction(1, 25)
    if codec == "jpeg":  # mjpeg takes full-range 4:2:0 YUV, as ``ffmpeg -i x.png x.jpg`` makes
        context.pix_fmt = "yuvj420p"
        frame = frame.reformat(format="yuvj420p", interpolation="BICUBIC")
    else:
        context.pix_fmt = "gray" if grey else "rgb24"
    packets = [*context.encode(frame), *context.encode(None)]
    return b"".join(bytes(p) for p in packets)


_ENCODE = {"pil": _encode_pil, "opencv": _encode_opencv, "torchvision": _encode_torchvision, "ffmpeg": _encode_ffmpeg}


def encode(library: str, image: np.ndarray, codec: str = "jpeg") -> bytes:
    """``image`` (``uint8 (H, W, 3 or 1)``) compressed as ``codec`` (``jpeg`` or ``png``) by ``library``, with
    the library's default settings (JPEG quality, quantisation tables, chroma subsampling)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")
    return _ENCODE[library](image, codec)


def round_trip(library: str, image: np.ndarray, codec: str = "jpeg") -> np.ndarray:
    """``image`` encoded and decoded again by ``library``: its codec's loss (nothing for PNG)."""
    return decode(library, encode(library, image, codec), grey=image.shape[-1] == 1)


# ---------------------------------------------------------------------------------------------------- versions


def versions(decoder: str) -> dict[str, object]:
    """The library behind ``decoder`` and the image codecs it was built with, as far as it reports them."""
    if decoder == "pil":
        import PIL
        from PIL import features

        return {"Pillow": PIL.__version__, "jpeg_api": features.version("jpg"),
                "libjpeg_turbo": features.version("libjpeg_turbo"), "zlib": features.version("zlib")}  # fmt: skip
    if decoder == "opencv":
        import cv2

        build = cv2.getBuildInformation()
        found = {k: re.search(rf"^\s*{k}:\s*(.+)$", build, re.MULTILINE) for k in ("JPEG", "PNG")}
        return {"OpenCV": cv2.__version__, **{k.lower(): m.group(1).strip() if m else None for k, m in found.items()}}
    if decoder == "torchvision":
        import torch
        import torchvision

        info: dict[str, object] = {"torchvision": torchvision.__version__}
        try:  # torchvision's own image extension says which libjpeg it was built with
            info["jpeg_api"] = int(torch.ops.image._jpeg_version())
            info["libjpeg_turbo"] = bool(torch.ops.image._is_compiled_against_turbo())
        except (AttributeError, RuntimeError):
            info["jpeg_api"] = info["libjpeg_turbo"] = None
        return info
    if decoder == "ffmpeg":
        import av

        libraries = {
            k: ".".join(map(str, v)) for k, v in av.library_versions.items() if k in ("libavcodec", "libswscale")
        }
        return {"PyAV": av.__version__, "FFmpeg": getattr(av, "ffmpeg_version_info", None), **libraries}
    raise ValueError(f"unknown decoder {decoder!r}; valid decoders: {', '.join(DECODERS)}")
