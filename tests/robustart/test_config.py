"""Every YAML in conf/ composes; typos and wrong types fail while composing."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from robustart.noise import get_noise_entry
from robustart.run import build_noise, identity, run_directory
from tests.conftest import CONF, compose_config

GROUPS = ["model", "noise", "data", "training", "evaluation", "experiment", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)
    assert sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")) == ["local", "slurm"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    assert cfg.model.name and cfg.data.name and cfg.noise.name
    if group == "noise":
        assert build_noise(cfg.noise).conditions() is not None
        assert cfg.noise.name == option


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_launchers_compose(launcher):
    cfg = compose_config([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher" if launcher == "local" else "SlurmLauncher")


def test_noise_configs_build_their_conditions():
    cfg = compose_config(["experiment=quickstart"])
    conditions = build_noise(cfg.noise).conditions()
    assert len([c for c in conditions if c.noise == "pgd_linf"]) == 3
    assert len([c for c in conditions if c.noise == "imagenet_c"]) == 4 * 5


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("model.nmae=x", ConfigCompositionException),
        ("evaluation.batch_size=many", ConfigCompositionException),
        ("model=no_such_model", ConfigCompositionException),
    ],
)
def test_typos_and_types_fail_when_composing(override, error):
    with pytest.raises(error):
        compose_config([override])


def test_noise_schema_is_strict():
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose_config(["noise=pgd_linf", "noise.esp=[1/255]"])
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(["noise=pgd_linf", "noise.steps=ten"])


def test_run_identity_ignores_paths_and_device_but_not_results():
    base = compose_config(["experiment=quickstart"])
    moved = compose_config(["experiment=quickstart", "paths.results_dir=/elsewhere", "evaluation.device=cpu"])
    other = compose_config(["experiment=quickstart", "noise.members.pgd_linf.steps=3"])
    assert identity(base) == identity(moved)
    assert run_directory(base)[0] == run_directory(moved)[0]
    assert run_directory(base)[0] != run_directory(other)[0]


def test_run_identity_spells_out_noise_defaults():
    implicit = compose_config(["experiment=quickstart"])
    explicit = compose_config(["experiment=quickstart", "noise.members.imagenet_c.params=auto"])
    other = compose_config(["experiment=quickstart", "noise.members.imagenet_c.params=imagenet"])
    assert run_directory(implicit)[0] == run_directory(explicit)[0]
    assert run_directory(implicit)[0] != run_directory(other)[0]
    assert identity(implicit)["noise"]["options"]["imagenet_c"]["params"] == "auto"


def _defaults(name: str) -> dict:
    return dataclasses.asdict(get_noise_entry(name).options())


@pytest.mark.parametrize("path", sorted((CONF / "noise").glob("*.yaml")), ids=lambda p: p.stem)
def test_noise_yamls_set_only_what_differs_from_the_defaults(path):
    raw = OmegaConf.to_container(OmegaConf.load(path))
    settings = raw.get("members") or {raw["name"]: {k: v for k, v in raw.items() if k not in ("name", "defaults")}}
    for name, options in settings.items():
        same = {k: v for k, v in options.items() if _defaults(name)[k] == v}
        assert not same, f"{path.name} repeats the defaults of {name}: {same}"
    if "members" in raw:  # a suite gives each member its options schema
        assert {f"/noise_options_{name}@members.{name}" for name in settings} <= set(raw["defaults"])


def test_suite_members_are_checked_while_composing():
    with pytest.raises(ConfigCompositionException):
        compose_config(["experiment=quickstart", "noise.members.pgd_linf.stepz=3"])
    with pytest.raises(ConfigCompositionException):
        compose_config(["experiment=quickstart", "noise.members.imagenet_c.severities=one"])


def test_noise_options_left_out_of_the_run_identity(monkeypatch):
    """An option added after runs existed (``omit_default``) keeps their ids while at its default; an option that
    cannot change results (``identity: False``) never enters the id."""
    from robustart.noise import registry

    entry = get_noise_entry("pgd_linf")
    expected = {"pgd_linf": {**_defaults("pgd_linf"), "added": 3}}

    @dataclasses.dataclass
    class Extended(entry.options):
        added: int = dataclasses.field(default=0, metadata={"identity": registry.OMIT_DEFAULT})
        verbose: bool = dataclasses.field(default=False, metadata={"identity": False})

    base = compose_config(["noise=pgd_linf"])
    plain = OmegaConf.to_container(base)
    monkeypatch.setitem(registry._REGISTRY, "pgd_linf", dataclasses.replace(entry, options=Extended))

    def with_noise(**options):
        return OmegaConf.create({**plain, "noise": {**plain["noise"], **options}})

    def run_id(**options):
        return run_directory(with_noise(**options))[0]

    assert run_id() == run_id(added=0) == run_id(verbose=True) == run_directory(base)[0]
    assert run_id(added=3) != run_id()
    assert identity(with_noise(added=3))["noise"]["options"] == expected
