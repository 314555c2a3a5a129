"""Noise: every registered noise keeps shape/dtype/range and is deterministic; corruptions match the
reference implementation where it is deterministic and its statistics where it is random."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from robustart import model_zoo, noise
from robustart.noise.adversarial import parse_eps
from robustart.noise.natural import CORRUPTIONS, corrupt
from robustart.noise.natural.params import IMAGENET_PARAMS
from robustart.noise.registry import OMIT_DEFAULT, identity_options, register_noise


def _images(n=4, c=3, size=32, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _photos(size: int) -> torch.Tensor:
    """Real photographs (scikit-image's), resized to ``size`` px."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    resized = [np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in photos]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255


def _tiny_model():
    torch.manual_seed(0)
    return model_zoo.create_model("small_cnn", in_chans=3, num_classes=10)


#: lighter settings so every registered noise runs here in seconds
_LIGHT = {"square": {"queries": 200}, "fab": {"steps": 10}, "apgd_ce": {"steps": 10}, "apgd_t": {"steps": 10},
          "apgd_l1": {"steps": 10}, "autoattack": {"eps": ["8/255"]},
          "wcar": {"attacks": ["fgsm", "pgd_linf", "apgd_ce"], "options": {"apgd_ce": {"steps": 10}}}}  # fmt: skip
#: attacks without a budget (minimal perturbations), with light settings
_UNBOUNDED = {"cw": {"steps": 10}, "deepfool": {"steps": 3},
              "min_eps": {"attacks": ["fgsm", "pgd_linf", "mim"], "steps": 2, "search_steps": 2,
                          "binsearch_steps": 2}}  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "autoattack" else n for n in noise.list_noises()]
)
def test_every_noise_keeps_shape_dtype_range_and_is_deterministic(name):
    options = {"severities": [1, 5]} if name == "imagenet_c" else {}
    if noise.get_noise_entry(name).kind == "adversarial":
        options = {"eps": ["2/255", "8/255"], **_LIGHT.get(name, {})}
    if name in _UNBOUNDED:
        options = dict(_UNBOUNDED[name])
    if name == "transfer":  # examples crafted on another model (differently initialised) than the one attacked
        torch.manual_seed(1)
        options["source"] = model_zoo.create_model("small_cnn", in_chans=3, num_classes=10)
    if name == "imagenet_p":
        options = {"perturbations": ["gaussian_noise", "rotate"]}
    n = noise.create_noise(name, **options)
    x, y, ids = _images(), torch.arange(4), torch.arange(4)
    model = _tiny_model() if n.needs_model else None
    if getattr(n, "sequences", False):  # each condition makes a sequence of frames per image
        for cond in n.conditions():
            a, b = (torch.cat([f for _, f in n.chunks(x, cond, ids)], dim=1) for _ in range(2))
            assert a.shape[0] == len(x) and a.shape[2:] == x.shape[1:] and a.dtype == x.dtype
            assert a.min() >= 0 and a.max() <= 1
            assert torch.equal(a, b), cond
        return
    for cond in n.conditions():
        a = n.apply(x, y, ids, cond, model)
        b = n.apply(x, y, ids, cond, model)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b), cond
        if cond.eps is not None:
            assert (a - x).abs().max() <= cond.eps + 1e-6


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_randomness_is_per_sample(name):
    x = _images(6)
    full = corrupt(x, name, 3, seed=7, sample_ids=[10, 11, 12, 13, 14, 15])
    part = corrupt(x[2:4], name, 3, seed=7, sample_ids=[12, 13])
    assert torch.allclose(full[2:4], part, atol=1e-6)
    if name.endswith("_noise"):
        assert not torch.equal(corrupt(x, name, 3, seed=8), corrupt(x, name, 3, seed=7))


# Pixel distance from the clean image is not monotone in severity for every corruption: saturate
# alternates between desaturating and oversaturating (AlexNet's errors: 0.59, 0.66, 0.51, ...), frost
# mixes in a random crop with weights (0.65, 0.7) -> (0.6, 0.75), and fog's last severity rescales the
# image more strongly, spatter switches from water (severities 1-3) to mud (4-5), and the original glass
# blur moves pixels about as far at severity 2 as at 1 (and 4 as 3), and elastic_transform's severities
# trade a large smooth warp (1-2) for small local ones (3-5; AlexNet's errors 0.53, 0.70, 0.56, ...).
# For those, severity is ordered by model error, not by pixel distance (their own tests check their
# distances against the reference).
NOT_MONOTONE = {"saturate", "fog", "frost", "spatter", "glass_blur", "elastic_transform"}


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - NOT_MONOTONE))
def test_severity_is_monotone(name):
    x = _photos(96)
    distance = [(corrupt(x, name, s, seed=0) - x).abs().mean().item() for s in range(1, 6)]
    assert all(a < b for a, b in itertools.pairwise(distance)), distance


def test_bad_arguments():
    x = _images()
    with pytest.raises(ValueError, match=r"severity must be an integer in 1\.\.5"):
        corrupt(x, "contrast", 0)
    with pytest.raises(ValueError, match="unknown corruption 'fogg'; valid names: gaussian_noise, shot_noise"):
        corrupt(x, "fogg", 1)
    with pytest.raises(ValueError, match=r"valid: 1, 2, 3, 4, 5\), got 6"):
        corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        corrupt(x * 255, "contrast", 1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corrupt(x[0], "contrast", 1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corrupt(torch.rand(2, 4, 32, 32), "contrast", 1)
    with pytest.raises(ValueError, match="takes no option"):
        noise.create_noise("pgd_linf", epz=[1])


def _reference(name, image_uint8, severity):
    from imagecorruptions import corrupt as reference_corrupt

    return reference_corrupt(image_uint8, corruption_name=name, severity=severity).astype(np.float64)


@pytest.mark.fidelity
@pytest.mark.parametrize("name", ["brightness", "contrast"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_deterministic_corruptions_match_reference(name, severity):
    from skimage import data

    image = data.astronaut()[::2, ::2][:224, :224]  # a real photograph, 224 x 224
    ours = corrupt(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, name, severity)
    ours = ours[0].permute(1, 2, 0).double().numpy() * 255
    ref = _reference(name, image, severity)
    # the reference truncates to uint8 (the original's np.uint8 cast)
    assert np.abs(np.floor(ours + 1e-6) - ref).max() <= 1


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_noise_statistics_match_the_specification(severity):
    x = torch.full((1, 3, 224, 224), 0.5)
    residual = corrupt(x, "gaussian_noise", severity) - x
    sigma = IMAGENET_PARAMS["gaussian_noise"][severity - 1]
    # the residual is N(0, sigma) clipped to the image range: compare with that distribution
    expected = np.clip(np.random.default_rng(0).normal(0, sigma, 10**6), -0.5, 0.5).std()
    assert abs(residual.std().item() - expected) < 0.02 * expected
    assert abs(residual.mean().item()) < 0.01


def test_impulse_noise_flips_the_specified_share():
    x = torch.full((2, 3, 224, 224), 0.5)
    amount = IMAGENET_PARAMS["impulse_noise"][2]
    out = corrupt(x, "impulse_noise", 3)
    flipped = out != 0.5
    assert abs(flipped.float().mean().item() - amount) < 0.01
    assert abs((out == 1).float().mean().item() - amount / 2) < 0.01


def test_shot_noise_is_poisson():
    x = torch.full((1, 3, 224, 224), 0.4)
    c = IMAGENET_PARAMS["shot_noise"][0]
    counts = corrupt(x, "shot_noise", 1) * c
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert abs(counts.mean().item() - 0.4 * c) < 0.1 and abs(counts.var().item() - 0.4 * c) < 1.0


def test_every_noise_declares_its_options_as_one_dataclass():
    for name in noise.list_noises():
        entry = noise.get_noise_entry(name)
        assert dataclasses.is_dataclass(entry.options), name
        defaults = entry.options()  # every option has a default
        assert [f.name for f in dataclasses.fields(defaults)] == entry.option_names()


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by the test are undone afterwards."""
    from robustart.noise import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_options_fields_declare_their_place_in_the_run_identity(scratch_registry):
    @dataclasses.dataclass
    class ScratchOptions:
        strength: float = 1.0
        levels: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
        added: int = dataclasses.field(default=0, metadata={"identity": OMIT_DEFAULT})
        verbose: bool = dataclasses.field(default=False, metadata={"identity": False})

    @register_noise("scratch", kind="natural", options=ScratchOptions)
    def scratch(opts: ScratchOptions):
        """A test noise."""
        return opts

    assert noise.create_noise("scratch", strength=2.0) == ScratchOptions(strength=2.0)
    full = dataclasses.asdict(ScratchOptions())
    assert identity_options("scratch", full) == {"strength": 1.0, "levels": [1, 2]}
    assert identity_options("scratch", {**full, "added": 3, "verbose": True})["added"] == 3
    assert "verbose" not in identity_options("scratch", {**full, "verbose": True})
    with pytest.raises(ValueError, match=r"takes no option\(s\) \['strenght'\]; its options: \['added', 'levels'"):
        noise.create_noise("scratch", strenght=2.0)


def test_register_noise_checks_the_options_dataclass(scratch_registry):
    @dataclasses.dataclass
    class Named:
        name: str = "x"

    @dataclasses.dataclass
    class BadRule:
        steps: int = dataclasses.field(default=1, metadata={"identity": "sometimes"})

    with pytest.raises(TypeError, match="options must be a dataclass"):
        register_noise("scratch", kind="natural", options=dict)
    with pytest.raises(ValueError, match="'name' is reserved"):
        register_noise("scratch", kind="natural", options=Named)
    with pytest.raises(ValueError, match="use True, False or 'omit_default'"):
        register_noise("scratch", kind="natural", options=BadRule)


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(0.5) == 0.5 and parse_eps("0") == 0.0
    for bad in ("-1/255", "a/b", "1/0", -0.1, "inf"):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_pgd_lowers_accuracy_of_a_trained_model(fashion_subset_model):
    model, x, y = fashion_subset_model
    pgd = noise.create_noise("pgd_linf", eps=["8/255"], steps=10, rel_stepsize=0.25)
    [cond] = pgd.conditions()
    adv = pgd.apply(x, y, torch.arange(len(x)), cond, model)
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean()
        adv_acc = (model(adv).argmax(1) == y).float().mean()
    assert clean_acc > 0.6 and adv_acc < clean_acc - 0.1
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
