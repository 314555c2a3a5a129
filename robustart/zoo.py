"""``python -m robustart.zoo``: the model zoo from the command line.

    python -m robustart.zoo list [--family transformer] [--csv]
    python -m robustart.zoo show vit_b
    python -m robustart.zoo show nas_subnet --subnet 1234 --img-size 28

``list`` prints one line per entry: family, parameters, FLOPs at the entry's input size (counted by
torch's ``FlopCounterMode`` on the meta device, so nothing is allocated), preprocessing and the
pretrained weights it names. ``show`` prints one entry's whole metadata. Bad input exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from robustart.errors import USER_ERROR

COLUMNS = ("name", "family", "params", "flops", "input_size", "crop_pct", "interpolation", "architecture")


def _fingerprint() -> str:
    """What the counted metadata depends on: the zoo's source and the model libraries' versions."""
    import hashlib

    from robustart import model_zoo
    from robustart.environment import library_versions

    digest = hashlib.sha256(repr(sorted(library_versions().items())).encode())
    for path in sorted(Path(model_zoo.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _rows(family: str | None, cache: Path | None) -> list[dict]:
    """One row per entry. Counting FLOPs builds every model on the meta device (about half a second each), so
    the rows are cached in ``cache`` under a fingerprint of the zoo's source and library versions."""
    import json

    from robustart import model_zoo
    from robustart.training.checkpoint import atomic_write

    names = model_zoo.list_models(family)
    key = _fingerprint()
    saved = {}
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            saved = stored["rows"] if stored.get("fingerprint") == key else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            saved = {}
    missing = [n for n in names if n not in saved]
    if len(missing) > 4:
        print(f"counting parameters and FLOPs of {len(missing)} models (once; cached)...", file=sys.stderr)
    for name in missing:
        meta = model_zoo.get_metadata(name)
        saved[name] = {
            "name": name,
            "family": meta.family,
            "params": meta.params,
            "flops": meta.flops,
            "input_size": "x".join(map(str, meta.input_size)),
            "crop_pct": meta.crop_pct,
            "interpolation": meta.interpolation,
            "architecture": meta.architecture,
        }  # fmt: skip
    if missing and cache is not None:
        text = json.dumps({"fingerprint": key, "rows": saved}, indent=1)
        atomic_write(cache, lambda tmp: Path(tmp).write_text(text))
    return [saved[n] for n in names]


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table (params and FLOPs in k/M/G)."""
    cells = [[r["name"], r["family"], _human(r["params"]), _human(r["flops"]), r["input_size"], f"{r['crop_pct']:g}",
              r["interpolation"], r["architecture"]] for r in rows]  # fmt: skip
    header = ["name", "family", "params", "FLOPs", "input", "crop", "interp", "architecture (pretrained tag)"]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *cells, strict=True)]
    right = {2, 3}  # numbers align right
    lines = []
    for line in [header, *cells]:
        lines.append("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())  # fmt: skip
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m robustart.zoo", description="List and describe zoo models.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="one line per registered model")
    listing.add_argument("--family", help="only this family: cnn, transformer, mlp or nas")
    listing.add_argument("--csv", action="store_true", help="comma-separated values instead of a table")
    listing.add_argument("--no-cache", action="store_true", help="count again, ignoring the cached counts")
    show = sub.add_parser("show", help="the whole metadata of one model")
    show.add_argument("name")
    show.add_argument("--subnet", type=int, help="nas_subnet only: the subnet id")
    show.add_argument("--num-classes", type=int)
    show.add_argument("--in-chans", type=int)
    show.add_argument("--img-size", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from robustart import model_zoo

    try:
        if args.command == "list":
            cache_dir = Path(os.path.expanduser(os.environ.get("ROBUSTART_CACHE", "~/.cache/robustart")))
            rows = _rows(args.family, None if args.no_cache else cache_dir / "zoo-metadata.json")
            if args.csv:
                writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            else:
                print(format_table(rows))
                print(f"\n{len(rows)} models; FLOPs of one image at the input size (a multiply-add counts 2)")
        else:
            overrides = {"subnet": args.subnet, "num_classes": args.num_classes, "in_chans": args.in_chans,
                         "img_size": args.img_size}  # fmt: skip
            meta = model_zoo.get_metadata(args.name, **overrides)
            for key, value in meta.as_dict().items():
                if key == "genes" and value:
                    print("genes:")
                    for gene, v in value.items():
                        print(f"  {gene:<14}{v}")
                else:
                    print(f"{key:<16}{value}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
