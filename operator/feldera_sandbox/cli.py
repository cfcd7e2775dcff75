"""The sandbox's verbs of the `feldera-operator` command: emulator, controlplane, demo, bench,
watch-cost."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the sandbox's subcommands to the `feldera-operator` parser's subparsers."""
    emulator = sub.add_parser("emulator", help="Serve an emulator on 127.0.0.1.")
    emu_sub = emulator.add_subparsers(dest="emulator", required=True)
    from feldera_sandbox import feldera_emulator

    feldera_emulator.add_arguments(emu_sub.add_parser("feldera", help="Feldera API emulator."))

    from feldera_sandbox import controlplane, toolchain

    controlplane.add_arguments(
        sub.add_parser(
            "controlplane",
            help="Run a local Kubernetes control plane (etcd + kube-apiserver) until stopped.",
        )
    )
    toolchain.add_arguments(
        sub.add_parser(
            "build-tools",
            help="Build kube-apiserver, etcd and helm from their pinned Go modules (once).",
        )
    )
    from feldera_sandbox import demo

    demo.add_arguments(
        sub.add_parser("demo", help="Run the operator end to end on the embedded emulators.")
    )
    from feldera_sandbox import bench

    bench.add_arguments(
        sub.add_parser("bench", help="Measure reaction time, API load and memory at scale.")
    )
    from feldera_sandbox import watch_cost

    watch_cost.add_arguments(
        sub.add_parser(
            "watch-cost",
            help="Measure the ConfigMap watch's cost with many unrelated ConfigMaps present.",
        )
    )


def main(args: argparse.Namespace) -> int:
    if args.command == "emulator":
        from feldera_sandbox import feldera_emulator

        return feldera_emulator.main(args)
    if args.command == "controlplane":
        from feldera_sandbox import controlplane

        return controlplane.main(args)
    if args.command == "build-tools":
        from feldera_sandbox import toolchain

        return toolchain.main(args)
    if args.command == "demo":
        from feldera_sandbox import demo

        return demo.main(args)
    if args.command == "bench":
        from feldera_sandbox import bench

        return bench.main(args)
    if args.command == "watch-cost":
        from feldera_sandbox import watch_cost

        return watch_cost.main(args)
    raise AssertionError(args.command)
