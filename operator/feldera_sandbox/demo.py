"""`feldera-operator demo`: the operator end to end on its embedded default, in a minute.

Starts a local Kubernetes control plane (kube-apiserver and etcd, built once from their Go
modules; or the cluster of KUBECONFIG with USE_EXISTING_CLUSTER=true), the Feldera emulator and
the real operator (`feldera-operator run`, i.e. kopf, with the chart's ServiceAccount and RBAC),
applies crds/ and examples/ with a real kubectl, then walks through pausing and
resuming a connector, a drift correction, and pausing the pipeline, showing `kubectl get feldera`
and the connectors' status after each step; then, for the pipeline declared whole
(examples/order-totals.yaml), a SQL change: its preview, its approval (the emulator runs as
Feldera Enterprise, which keeps state across a restart and so asks for one) and the update.
Exits 0 when every step converged.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import yaml

from feldera_sandbox.processes import Stopped, exit_code, stop_on_signals
from feldera_sandbox.sandbox import (
    EXAMPLE_FELDERA_PORT,
    EXAMPLES_DIR,
    Sandbox,
    connector_entry,
    is_ready,
    wait_for,
)

CONNECTORS_JSONPATH = (
    '{range .status.inputs[*]}{"  input  "}{.table}.{.connector}{"\\tdeclared="}{.declared}'
    '{"\\tstate="}{.state}{"\\tactive="}{.active}{"\\n"}{end}'
    '{range .status.outputs[*]}{"  output "}{.view}.{.connector}{"\\tdeclared="}{.declared}'
    '{"\\tstate="}{.state}{"\\tactive="}{.active}{"\\n"}{end}'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", help="Where logs and the kubeconfig go (default: a new temporary directory)."
    )
    parser.add_argument(
        "--period", type=float, default=2.0, help="Operator observation period (default 2 s)."
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="Leave everything running at the end, until Ctrl-C, to try kubectl by hand.",
    )


def _require_free_port(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(
                f"port {port} is in use; the demo's Feldera emulator listens there because "
                "examples/feldera-instance.yaml points the FelderaInstance at it"
            ) from None


def _example_api_key() -> str:
    for doc in yaml.safe_load_all((EXAMPLES_DIR / "feldera-instance.yaml").read_text()):
        if doc and doc.get("kind") == "Secret":
            return str(doc["stringData"]["apiKey"])
    raise RuntimeError("examples/feldera-instance.yaml has no Secret")


class Demo:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.api_key = _example_api_key()

    def step(self, title: str) -> None:
        print(f"\n=== {title}", flush=True)

    def show(self) -> None:
        print("$ kubectl get feldera")
        print(self.sb.kubectl("get", "feldera").stdout.rstrip())
        print("$ kubectl get fpl orders -o jsonpath=<connectors>")
        print(
            self.sb.kubectl("get", "fpl", "orders", "-o", f"jsonpath={CONNECTORS_JSONPATH}")
            .stdout.rstrip()
            .replace("\\t", "  "),
            flush=True,
        )

    def pipeline(self) -> dict[str, object]:
        result: dict[str, object] = self.sb.kubectl_json("get", "fpl", "orders")
        return result

    def wait_ready(self) -> None:
        self.sb.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "fpl/orders")

    def wait_connector(self, relation: str, connector: str, state: str, direction: str) -> None:
        def check() -> bool:
            obj = self.pipeline()
            entry = connector_entry(obj, relation, connector, direction)
            return bool(entry and entry.get("state") == state and is_ready(obj))

        wait_for(check, timeout=60, interval=0.2, what=f"{relation}.{connector} {state}")

    def _has_event(self, reason: str) -> bool:
        events = self.sb.kubectl_json("get", "events")
        return any(e.get("reason") == reason for e in events.get("items") or [])

    def run(self) -> None:
        sb = self.sb
        self.step("Start Kubernetes (kube-apiserver + etcd), the Feldera emulator and the operator")
        _require_free_port(EXAMPLE_FELDERA_PORT)
        sb.start_kubernetes()
        sb.start_feldera(
            "--api-key",
            self.api_key,
            "--delay",
            "0.3",
            "--edition",
            "enterprise",
            port=EXAMPLE_FELDERA_PORT,
        )
        print(f"Kubernetes API: {sb.kube_url}   Feldera API: {sb.feldera_url}")
        print(f"Logs and kubeconfig: {sb.workdir}")

        self.step("Deploy the SQL program to Feldera (a team's usual tooling does this)")
        sql = (EXAMPLES_DIR / "orders.sql").read_text()
        sb.feldera(
            "PUT",
            "/v0/pipelines/orders",
            {"name": "orders", "program_code": sql},
            api_key=self.api_key,
        )
        print("PUT /v0/pipelines/orders: created (Stopped)")

        self.step("kubectl apply -f crds/, then the operator with the chart's identity and RBAC")
        sb.install_crds()
        sb.install_operator_identity()
        sb.start_operator("--period", str(self.period), "--log-format", "text")

        self.step("kubectl apply -f examples/  (live paused, backfill and sink running)")
        print(sb.kubectl("apply", "-f", str(EXAMPLES_DIR)).stdout.rstrip())
        self.wait_ready()
        self.show()

        self.step("Start the `live` connector: a JSON patch of one field")
        patch = '[{"op": "replace", "path": "/spec/inputs/1/paused", "value": false}]'
        print(f"$ kubectl patch fpl orders --type=json -p '{patch}'")
        sb.kubectl("patch", "fpl", "orders", "--type=json", "-p", patch)
        self.wait_connector("orders", "live", "Running", "inputs")
        self.show()

        self.step("Pause it again: server-side apply of that one connector entry")
        entry = (
            "apiVersion: feldera.dev/v1alpha1\nkind: FelderaPipeline\nmetadata:\n  name: orders\n"
            "spec:\n  inputs:\n  - {table: orders, connector: live, paused: true}\n"
        )
        print("$ kubectl apply --server-side --field-manager=oncall --force-conflicts -f -")
        print(entry.rstrip())
        sb.kubectl(
            "apply",
            "--server-side",
            "--field-manager=oncall",
            "--force-conflicts",
            "-f",
            "-",
            input=entry,
        )
        self.wait_connector("orders", "live", "Paused", "inputs")
        self.show()

        self.step("Drift: someone pauses `backfill` behind the operator's back in Feldera")
        sb.feldera(
            "POST",
            "/v0/pipelines/orders/tables/orders/connectors/backfill/pause",
            api_key=self.api_key,
        )
        print("POST .../tables/orders/connectors/backfill/pause  (200)")
        started = time.monotonic()

        def backfill_running_again() -> bool:
            stats = sb.feldera("GET", "/v0/pipelines/orders/stats", api_key=self.api_key)
            flags = {i["endpoint_name"]: i["paused"] for i in stats["inputs"]}
            return flags.get("orders.backfill") is False and self._has_event("DriftCorrected")

        wait_for(backfill_running_again, timeout=60, interval=0.1, what="drift corrected")
        print(f"Feldera reports it running again {time.monotonic() - started:.1f}s later")
        events = sb.kubectl(
            "get",
            "events",
            "-o",
            "custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
        ).stdout
        print("$ kubectl get events")
        print(events.rstrip())

        self.step("Pause the whole pipeline: kubectl patch --type merge")
        sb.kubectl("patch", "fpl", "orders", "--type=merge", "-p", '{"spec": {"paused": true}}')

        def pipeline_paused() -> bool:
            obj = self.pipeline()
            status = obj.get("status")
            return isinstance(status, dict) and status.get("state") == "Paused" and is_ready(obj)

        wait_for(pipeline_paused, timeout=60, interval=0.2, what="pipeline Paused")
        self.show()
        self.change_the_program()
        print("\nDemo complete: every step converged.")

    def change_the_program(self) -> None:
        sb = self.sb
        self.step("A pipeline declared whole (examples/order-totals.yaml): created and started")
        sb.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "fpl/order-totals")
        print(sb.kubectl("get", "fpl", "order-totals").stdout.rstrip())
        self.show_program()

        self.step("Change its SQL: a new view, in the ConfigMap (a reviewed commit, applied)")
        configmap, _ = yaml.safe_load_all((EXAMPLES_DIR / "order-totals.yaml").read_text())
        new_view = (
            "CREATE MATERIALIZED VIEW big_spenders AS\n"
            "  SELECT customer FROM payments GROUP BY customer HAVING SUM(amount) > 10000;\n"
        )
        configmap["data"]["program.sql"] += new_view
        print(new_view.rstrip())
        sb.kubectl("apply", "-f", "-", input=json.dumps(configmap))

        def awaiting_approval() -> dict[str, object] | None:
            obj = sb.kubectl_json("get", "fpl", "order-totals")
            ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
            return obj if ready["reason"] == "AwaitingApproval" else None

        obj = wait_for(awaiting_approval, timeout=60, interval=0.2, what="the change previewed")
        print("Previewed without stopping anything; the old program keeps running:")
        print(sb.kubectl("get", "fpl", "order-totals").stdout.rstrip())
        self.show_program()
        pending = obj["status"]["program"]["pending"]

        self.step("Approve exactly that program: spec.bootstrap.approve = its hash")
        patch = json.dumps({"spec": {"bootstrap": {"approve": pending["hash"]}}})
        print(f"$ kubectl patch fpl order-totals --type=merge -p '{patch}'")
        sb.kubectl("patch", "fpl", "order-totals", "--type=merge", "-p", patch)

        def updated() -> bool:
            stored = sb.feldera(
                "GET", "/v0/pipelines/order-totals?selector=all", api_key=self.api_key
            )
            return bool(
                "big_spenders" in stored["program_code"]
                and stored["deployment_status"] == "Running"
                and is_ready(sb.kubectl_json("get", "fpl", "order-totals"))
            )

        wait_for(updated, timeout=90, interval=0.2, what="the new program running")
        print("Stopped with a checkpoint, updated, compiled, started; its state bootstrapped:")
        print(sb.kubectl("get", "fpl", "order-totals").stdout.rstrip())
        events = sb.kubectl(
            "get",
            "events",
            "--field-selector=involvedObject.name=order-totals",
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ).stdout
        print("$ kubectl get events --field-selector=involvedObject.name=order-totals")
        print(events.rstrip())

    def show_program(self) -> None:
        print("$ kubectl get fpl order-totals -o jsonpath='{.status.program}'")
        program = self.sb.kubectl(
            "get", "fpl", "order-totals", "-o", "jsonpath={.status.program}"
        ).stdout
        print(json.dumps(json.loads(program), indent=2), flush=True)

    period: float = 2.0


def main(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="feldera-demo-"))
    sandbox = Sandbox(workdir)
    demo = Demo(sandbox)
    demo.period = args.period
    try:
        with stop_on_signals():
            try:
                demo.run()
                if args.keep_running:
                    keep_running(sandbox)
                return 0
            except (Stopped, KeyboardInterrupt):
                raise
            except Exception as e:
                print(f"\nDemo failed: {e}")
                for proc in sandbox.operators:
                    print(f"--- last lines of {proc.log_path}")
                    print(proc.log_tail(40))
                return 1
            finally:
                sandbox.stop()
    except (Stopped, KeyboardInterrupt) as e:
        print(f"\nStopped ({e or 'SIGINT'}); every process the demo started is stopped.")
        return exit_code(e)


def keep_running(sandbox: Sandbox) -> None:
    """Until a signal: say when a process ends; restart the operator, keep the rest up."""
    print(f"\nStill running. Try: kubectl --kubeconfig {sandbox.kubeconfig} get feldera")
    print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
    reported: set[int] = set()
    while True:
        time.sleep(1)
        for proc in sandbox.processes:
            if proc.running or proc.pid in reported:
                continue
            reported.add(proc.pid)
            print(f"{proc.name} exited with code {proc.popen.returncode}; see {proc.log_path}")
            if proc in sandbox.operators:
                args = proc.argv[proc.argv.index("--liveness") + 2 :]
                restarted = sandbox.start_operator(*args, name=f"{proc.name}-restarted")
                print(f"restarted the operator ({restarted.log_path})", flush=True)
