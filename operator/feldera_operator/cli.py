"""The `feldera-operator` command: run the operator, generate CRDs, serve emulators, demo, bench.

Each subcommand imports its module lazily, so `feldera-operator run` in the production image never
loads the emulators or their optional dependencies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _build_parser() -> argparse.ArgumentParser:
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

    emulator = sub.add_parser("emulator", help="Serve an emulator on 127.0.0.1.")
    emu_sub = emulator.add_subparsers(dest="emulator", required=True)
    from feldera_operator.emulators import feldera as feldera_emulator
    from feldera_operator.emulators import kubernetes as kubernetes_emulator

    feldera_emulator.add_arguments(emu_sub.add_parser("feldera", help="Feldera API emulator."))
    kubernetes_emulator.add_arguments(
        emu_sub.add_parser("kubernetes", help="Kubernetes API emulator.")
    )

    from feldera_operator import demo

    demo.add_arguments(
        sub.add_parser("demo", help="Run the operator end to end on the embedded emulators.")
    )
    from feldera_operator import bench

    bench.add_arguments(
        sub.add_parser("bench", help="Measure reaction time, API load and memory at scale.")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "run":
        from feldera_operator import runner

        return runner.main(args)
    if args.command == "crds":
        from feldera_operator import crdgen

        return crdgen.main(args)
    if args.command == "emulator":
        if args.emulator == "feldera":
            from feldera_operator.emulators import feldera as feldera_emulator

            return feldera_emulator.main(args)
        from feldera_operator.emulators import kubernetes as kubernetes_emulator

        return kubernetes_emulator.main(args)
    if args.command == "demo":
        from feldera_operator import demo

        return demo.main(args)
    if args.command == "bench":
        from feldera_operator import bench

        return bench.main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
