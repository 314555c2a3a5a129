"""``python -m robustart [overrides]``: the Hydra command line.

With no overrides it runs ``experiment=quickstart``. Errors a user can cause (an unknown name, a
misspelt key, a wrong type, missing data, a bad checkpoint) end with one message and exit status 2.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from robustart.config import register_configs
from robustart.errors import USER_ERROR, UserError

#: the config groups ship inside the package (the repository's conf/ folder), so any install has a command line
CONF_PATH = "pkg://robustart.conf"
_task_started = False


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    from robustart.run import run

    try:
        run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None


def main() -> None:
    register_configs()
    args = sys.argv[1:]
    if not any(not a.startswith("-") for a in args) and not set(args) & {"--hydra-help", "--info", "--version"}:
        sys.argv.append("experiment=quickstart")
    try:
        _check_output_folders(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    try:
        _hydra_entry()
    except SystemExit as exit_:
        # Hydra exits with 1 when the config cannot be composed (unknown option, misspelt key, bad type):
        # that is the user's input, so it gets the user-error status.
        if exit_.code == 1 and not _task_started:
            raise SystemExit(USER_ERROR) from None
        raise


def _check_output_folders(args: list[str]) -> None:
    """Hydra creates its run and sweep folders before the task starts; one that cannot be written is the user's
    error, told in one message instead of Hydra's traceback."""
    from pathlib import Path

    from robustart.store import check_writable

    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            check_writable(Path(value), key)


if __name__ == "__main__":
    main()
