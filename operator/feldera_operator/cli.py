"""The `feldera-operator` command: run the operator and generate its CRDs.

With the sandbox installed beside it (a source checkout: `pip install -e '.[dev]'`), the same
command also serves the sandbox's verbs (Feldera emulator, local control plane, demo, benchmark).
They are reached lazily, so `feldera-operator run` in the production image, which installs this
package alone, never loads them or their dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType


def _sandbox_cli() -> ModuleType | None:
    try:
        # Dynamic on purpose: the operator package never imports the sandbox (an import-linter
        # contract); only this command line reaches its verbs, when it is installed.
        return importlib.import_module("feldera_sandbox.cli")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "feldera_sandbox":
            return None
        raise


def _build_parser(sandbox: ModuleType | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feldera-operator",
        description="Kubernetes operator for Feldera pipelines and connectors.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from feldera_operator import runner

    runner.add_arguments(sub.add_parser("run", help="Run the operator (the container's command)."))

    crds = sub.add_parser("crds", help="Write the CRD manifests generated from the models.")
    crds.add_argument("--output", default="crds", help="Directory to write into (default: crds).")
    crds.add_argument(
        "--check",
        action="store_true",
        help="Do not write; exit 1 when the files differ from what the models generate.",
    )
    if sandbox is not None:
        sandbox.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    sandbox = _sandbox_cli()
    args = _build_parser(sandbox).parse_args(argv)
    if args.command == "run":
        from feldera_operator import runner

        return runner.main(args)
    if args.command == "crds":
        from feldera_operator import crdgen

        return crdgen.main(args)
    assert sandbox is not None, args.command
    result: int = sandbox.main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
