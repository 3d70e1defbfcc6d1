"""``sparse-cbm``: one command line for the applications around the pipeline.

    sparse-cbm params check [params.yaml]          validate without running anything
    sparse-cbm params apply cifar10 [released]     merge profiles from params/ into params.yaml
    sparse-cbm verify [STAGE...]                   rerun the pipeline in a clean checkout, compare with dvc.lock
    sparse-cbm spread                              measure how far each metric moves across machines and seeds
    sparse-cbm explain IMAGE [--box X0,Y0,X1,Y1]   SALF-CBM: a region's concepts, heatmaps, --edit CONCEPT=BETA
    sparse-cbm export FOLDER [--gallery N]         save the trained model as one folder (SparseCBM.from_pretrained)
    sparse-cbm serve [--model FOLDER] [--port N]   the explorer: a local web app on the trained model
    sparse-cbm train-shapes-clip [--help]          rebuild data/pretrained/shapes-clip-minilm.pt
    sparse-cbm docs [--check]                      regenerate docs/params.md and the results tables

(``python -m sparse_cbm_app.cli`` is the same command.)
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from sparse_cbm_app.cli.explain import add_parser as explain_parser
from sparse_cbm.errors import SparseCbmError


def _params(args: argparse.Namespace) -> int:
    from sparse_cbm_app.params import apply_profiles, load_params

    if args.action == "check":
        load_params(args.path)
        print(f"{args.path}: ok")
        return 0
    for path in apply_profiles(args.profiles, args.to):
        print(f"applied {path} to {args.to}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sparse_cbm_app.cli.verify import verify

    return verify(in_place=args.in_place, keep=args.keep, targets=args.stages)


def _spread(args: argparse.Namespace) -> int:
    from sparse_cbm_app.cli.spread import spread

    return spread(args.configurations.split(","), out=args.out, keep=args.keep)


def _export(args: argparse.Namespace) -> int:
    from sparse_cbm.trained import SparseCBM

    model = SparseCBM.from_pretrained(args.model)
    folder = model.save_pretrained(args.folder, gallery=args.gallery)
    print(f"saved {model!r} to {folder} (load it with SparseCBM.from_pretrained({str(folder)!r}))")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from sparse_cbm.trained import SparseCBM
    from sparse_cbm_app.explorer.server import serve

    serve(SparseCBM.from_pretrained(args.model), host=args.host, port=args.port)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from sparse_cbm_app.cli.docs import docs

    return docs(check=args.check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparse-cbm", description=__doc__.split("\n\n")[0].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    params = sub.add_parser("params", help="validate params.yaml or apply profiles to it")
    actions = params.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a params file")
    check.add_argument("path", nargs="?", default="params.yaml")
    apply = actions.add_parser("apply", help="merge profiles (names under params/ or YAML paths) into params.yaml, "
                                             "keeping its comments; `git checkout params.yaml` undoes it")
    apply.add_argument("profiles", nargs="+", metavar="PROFILE")
    apply.add_argument("--to", default="params.yaml")
    params.set_defaults(run=_params)
    verify = sub.add_parser("verify", help="rerun the pipeline in a clean checkout of HEAD and say, stage by "
                                           "stage, whether every output reproduces the committed dvc.lock")
    verify.add_argument("--in-place", action="store_true",
                        help="run in this checkout (which must be clean) instead of a temporary clone")
    verify.add_argument("--keep", action="store_true", help="keep the temporary clone and print its path")
    verify.add_argument("stages", nargs="*", metavar="STAGE",
                        help="verify only these stages and the stages they depend on (default: every stage)")
    verify.set_defaults(run=_verify)
    from sparse_cbm_app.cli.spread import CONFIGURATIONS
    from sparse_cbm_app.cli.tolerances import SPREAD_FILE

    spread = sub.add_parser("spread", help="rerun the committed pipeline on other kernel sets, thread counts and "
                                           f"seeds, and write the tolerances verify judges by ({SPREAD_FILE})")
    spread.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help="comma-separated, from: " + "; ".join(f"{n} ({c.says})" for n, c in CONFIGURATIONS.items()))
    spread.add_argument("--out", default=SPREAD_FILE, help="where to write the measurement (default: %(default)s)")
    spread.add_argument("--keep", action="store_true", help="keep the clones and their logs")
    spread.set_defaults(run=_spread)
    explain_parser(sub)
    export = sub.add_parser("export", help="save the trained model (CBM, SALF-CBM, backbone checkpoint, concepts) "
                                           "as one folder that SparseCBM.from_pretrained loads with nothing else")
    export.add_argument("folder", help="a new folder (or one written by export before, replaced whole)")
    export.add_argument("--model", default=".", help="the project that ran `dvc repro` (default: this one)")
    export.add_argument("--gallery", type=int, default=40, help="test images saved with it, for the explorer (default 40)")
    export.set_defaults(run=_export)
    serve = sub.add_parser("serve", help="the explorer: browse images, draw a region, see its concepts and heatmaps, "
                                         "edit a concept (a local web app)")
    serve.add_argument("--model", default=".", help="a project that ran `dvc repro` (default: this one) or an "
                                                    "exported folder")
    serve.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.set_defaults(run=_serve)
    docs = sub.add_parser("docs", help="regenerate docs/params.md from the params schema and the results tables of "
                                       "README.md and docs/results.md from metrics/*.json")
    docs.add_argument("--check", action="store_true",
                      help="change nothing; exit 1 naming every generated file that is stale")
    docs.set_defaults(run=_docs)
    shapes = sub.add_parser("train-shapes-clip", add_help=False,
                            help="rebuild the small CLIP of the shapes world (--help for its options)")
    shapes.set_defaults(run=None)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-shapes-clip"]:
        from sparse_cbm_app.cli.shapes_clip import main as shapes_main

        shapes_main(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SparseCbmError as exc:
        print(f"sparse-cbm {args.command}: error: {exc}", file=sys.stderr)
        return 2
