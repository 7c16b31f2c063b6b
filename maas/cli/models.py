"""`maas models ...`: import, list, show, tag, rm, verify."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `maas models` and its verbs."""
    p = sub.add_parser("models", help="the model registry (import, list, show, tag, rm, verify)",
                       description="Store, name, tag and check models under MAAS_HOME.")  # fmt: skip
    verbs = p.add_subparsers(dest="models_verb", metavar="VERB", required=True)
    imp = verbs.add_parser("import", help="import a model file or directory",
                           description="Copy a model's files into the content-addressed store and name it. "
                           "Tensor models (.onnx, torch.export .pt2, TorchScript .pt) are servable on the "
                           "v2 API; their signature is read from the file, or given with --signature.")  # fmt: skip
    imp.add_argument("path", help="GGUF file, HF directory, `maas train` output, .onnx, .pt2 or .pt file")
    imp.add_argument("--name", required=True, help="name[:tag] (tag defaults to latest)")
    imp.add_argument("--parent", default=None, help="name[:tag] of the model this one derives from")
    imp.add_argument(
        "--operation", default="import", help="how it was produced (import, fine-tune, quantize, ...)"
    )
    imp.add_argument("--signature", default=None, metavar="JSON",
                     help='a tensor model\'s inputs/outputs (needed for TorchScript; adds class labels): '
                     '{"inputs": [{"name", "datatype", "shape"}], "outputs": [...], "labels": [...]}')  # fmt: skip
    ls = verbs.add_parser("list", help="list models", description="NAME, TAG, FAMILY, SIZE, CREATED, PARENT.")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = verbs.add_parser(
        "show", help="one model's details", description="Config, files with digests, lineage."
    )
    show.add_argument("ref", help="name[:tag]")
    tag = verbs.add_parser("tag", help="add a tag", description="Point DST at the version SRC points at.")
    tag.add_argument("src")
    tag.add_argument("dst")
    rm = verbs.add_parser(
        "rm", help="remove a tag; unreferenced blobs are collected", description="Remove a tag."
    )
    rm.add_argument("ref")
    ver = verbs.add_parser(
        "verify", help="re-hash blobs and report corruption", description="Re-hash every blob."
    )
    ver.add_argument("ref", nargs="?", help="one model (default: all)")
    bi = verbs.add_parser(
        "import-builtins",
        help="import the built-in models (done once automatically)",
        description="Import the models shipped as Python packages into the registry. Runs once by itself "
        "at install or first use (set MAAS_AUTO_IMPORT_BUILTINS=0 to stop that); --force imports again "
        "models you removed.",
    )
    bi.add_argument("--force", action="store_true", help="also re-import built-ins removed with `rm`")
    for q in (imp, ls, show, tag, rm, ver, bi):
        q.set_defaults(func=run)


@contextlib.contextmanager
def with_signature(path: str, signature: str) -> Iterator[Path]:
    """A temporary model directory: the tensor-model file and a config.json with its signature."""
    from maas.errors import InvalidRequestError
    from maas.models.families import FILE_FAMILIES
    from maas.models.signature import Signature

    src = Path(path).expanduser()
    if not src.is_file() or src.suffix not in FILE_FAMILIES:
        raise InvalidRequestError(f"--signature goes with an .onnx, .pt2 or .pt file; {path!r} is not one")
    try:
        sig = Signature.from_dict(json.loads(Path(signature).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidRequestError(f"cannot read the signature {signature!r}: {e}") from None
    with tempfile.TemporaryDirectory(prefix="maas-import-") as tmp:
        d = Path(tmp)
        shutil.copyfile(src, d / src.name)
        meta = {"model_type": FILE_FAMILIES[src.suffix], "signature": sig.as_dict()}
        (d / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        yield d


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} TB"


def run(args: argparse.Namespace) -> int:
    """Dispatch a `maas models` verb."""
    from maas.store.builtin import ensure_builtins_imported, import_builtins
    from maas.store.registry import Registry

    verb = args.models_verb
    if verb == "import-builtins":
        done = import_builtins(Registry(), force=args.force)
        print(f"imported {', '.join(done)}" if done else "built-in models already imported")
        return 0
    ensure_builtins_imported()
    reg = Registry()
    if verb == "import":
        if args.signature:
            with with_signature(args.path, args.signature) as d:
                info = reg.import_path(d, args.name, parent=args.parent, operation=args.operation)
        else:
            info = reg.import_path(args.path, args.name, parent=args.parent, operation=args.operation)
        print(f"imported {info.name}:{info.tag} ({_size(info.size)}, {len(info.files)} file(s))")
    elif verb == "list":
        infos = reg.list_models()
        if args.json:
            print(json.dumps([i.as_dict() for i in infos], indent=2))
            return 0
        rows = [("NAME", "TAG", "FAMILY", "SIZE", "CREATED", "PARENT")]
        for i in infos:
            created = datetime.datetime.fromtimestamp(i.created).strftime("%Y-%m-%d %H:%M")
            rows.append((i.name, i.tag, i.family, _size(i.size), created, i.parent or "-"))
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    elif verb == "show":
        print(json.dumps(reg.show(args.ref).as_dict(), indent=2))
    elif verb == "tag":
        info = reg.tag(args.src, args.dst)
        print(f"{args.dst} -> version {info.version} ({', '.join(info.tags)})")
    elif verb == "rm":
        gone = reg.rm(args.ref)
        print(f"removed {args.ref}; {len(gone)} unreferenced blob(s) collected")
    elif verb == "verify":
        bad = 0
        for model, path, digest, ok in reg.verify(args.ref):
            bad += not ok
            print(f"{'ok     ' if ok else 'CORRUPT'}  {model}  {path}  {digest[:19]}")
        if bad:
            print(f"{bad} corrupt blob(s)", file=sys.stderr)
            return 1
    return 0
