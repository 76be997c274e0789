"""`kubetune sweep`: run a FineTuneSweep from a file or from a FineTuneJob and `--param` flags, follow
it, and show its trials and best trial."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubetune_api import API_VERSION, describe_errors
from kubetune_api.sweep import SWEEP_KIND, SWEEP_PLURAL, FineTuneSweep, FineTuneSweepStatus
from kubetune_cli.kube import CliError
from kubetune_cli.wait import Snapshot

USAGE = 2


def parse_param(text: str) -> dict[str, Any]:
    """`lora.r=8,16` (values) or `training.learningRate=1e-5..1e-3:log` (a range, for random)."""
    path, sep, spec = text.partition("=")
    if not sep or not path or not spec:
        raise CliError(f"--param {text!r}: expected PATH=V1,V2,... or PATH=MIN..MAX[:log]", USAGE)
    try:
        if ".." in spec:
            bounds, _, scale = spec.partition(":")
            low, _, high = bounds.partition("..")
            return {
                "path": path,
                "min": float(low),
                "max": float(high),
                **({"scale": scale} if scale else {}),
            }
        return {"path": path, "values": [float(v) for v in spec.split(",")]}
    except ValueError as e:
        raise CliError(f"--param {text!r}: the values must be numbers ({e})", USAGE) from e


def sweep_from_job(
    job: dict[str, Any],
    name: str | None,
    params: list[str],
    metric: str,
    direction: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A FineTuneSweep around a FineTuneJob manifest (e.g. `kubetune finetune ... -o yaml`)."""
    if job.get("kind") != "FineTuneJob":
        raise CliError(f"--template must be a FineTuneJob manifest, not {job.get('kind')!r}", USAGE)
    labels = (job.get("metadata") or {}).get("labels") or {}
    base = name or (job.get("metadata") or {}).get("name")
    return {
        "apiVersion": API_VERSION,
        "kind": SWEEP_KIND,
        "metadata": {"name": base} if base else {"generateName": "sweep-"},
        "spec": {
            "template": {"metadata": {"labels": labels}, "spec": job["spec"]},
            "parameters": [parse_param(p) for p in params],
            "objective": {"metric": metric, "direction": direction},
            **extra,
        },
    }


def check(body: dict[str, Any]) -> None:
    """The API models' verdict before anything is sent."""
    try:
        FineTuneSweep.model_validate({**body, "metadata": {"name": body["metadata"].get("name")}})
    except ValidationError as e:
        raise CliError(f"invalid FineTuneSweep: {describe_errors(e)}", USAGE) from e


def sweep_status(obj: dict[str, Any]) -> FineTuneSweepStatus:
    try:
        return FineTuneSweepStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        return FineTuneSweepStatus()


def sweep_snapshot(obj: dict[str, Any]) -> Snapshot:
    status = sweep_status(obj)
    phase = status.phase.value if status.phase else "Pending"
    parts = [phase, f"{status.trials_running or 0} running"]
    if status.best_trial is not None:
        parts.append(f"best {status.best_trial.name} {status.best_trial.metric:.4g}")
    return Snapshot(
        phase=phase,
        completed=status.trials_done or 0,
        total=status.trials_total or None,
        description=" · ".join(parts),
        ended=phase in ("Succeeded", "Failed"),
        failure=(status.message or "see kubetune sweep describe") if phase == "Failed" else None,
    )


def sweeps_table(items: list[dict[str, Any]]) -> Table:
    from kubetune_cli.views import age, phase_text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "PHASE", "TRIALS", "BEST", "METRIC", "AGE"):
        table.add_column(column)
    for obj in sorted(items, key=lambda o: o["metadata"]["name"]):
        status = sweep_status(obj)
        best = status.best_trial
        table.add_row(
            obj["metadata"]["name"],
            phase_text(status.phase.value if status.phase else None),
            f"{status.trials_done or 0}/{status.trials_total or '?'}",
            best.name if best else "-",
            f"{best.metric:.4g}" if best else "-",
            age(obj["metadata"].get("creationTimestamp")),
        )
    return table


def describe_sweep(obj: dict[str, Any]) -> RenderableType:
    from kubetune_cli.views import age, phase_text

    status, spec = sweep_status(obj), obj.get("spec", {})
    objective = spec.get("objective", {})
    head = Text.assemble(
        (f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}", "bold"),
        "  ",
        phase_text(status.phase.value if status.phase else None),
        f"  objective: {objective.get('direction')} {objective.get('metric')}",
        f"  {status.message or ''}",
    )
    trials = Table(box=None, pad_edge=False, header_style="bold", title="Trials", title_justify="left")
    paths = [p["path"] for p in spec.get("parameters", [])]
    for column in ("NAME", *paths, "PHASE", "METRIC"):
        trials.add_column(column)
    best_name = status.best_trial.name if status.best_trial else None
    for trial in status.trials:
        mark = " *" if trial.name == best_name else ""
        values = [f"{trial.parameters.get(p, float('nan')):.4g}" for p in paths]
        metric = "-" if trial.metric is None else f"{trial.metric:.4g}"
        trials.add_row(trial.name + mark, *values, trial.phase.value, metric)
    parts: list[RenderableType] = [head, Text(""), trials]
    if status.best_trial is not None:
        best = status.best_trial
        artifacts = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("KIND", "TARGET", "URI"):
            artifacts.add_column(column)
        for a in best.artifacts:
            artifacts.add_row(a.kind.value, a.target or "", a.uri)
        parts += [Text(f"\nBest trial: {best.name} ({best.metric:.4g})", style="bold"), artifacts]
    conditions = Table(
        box=None, pad_edge=False, header_style="bold", title="Conditions", title_justify="left"
    )
    for column in ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"):
        conditions.add_column(column)
    for c in status.conditions:
        conditions.add_row(
            c.type, c.status.value, c.reason or "", age(c.last_transition_time), c.message or ""
        )
    return Group(*parts, Text(""), conditions)


def register(app: typer.Typer) -> None:
    sweeps = typer.Typer(
        help="Hyperparameter sweeps: FineTuneSweeps of FineTuneJob trials.", no_args_is_help=True
    )
    app.add_typer(sweeps, name="sweep")

    @sweeps.command("run", no_args_is_help=True)
    def run(
        ctx: typer.Context,
        file: Annotated[Path | None, typer.Option("-f", "--file", help="A FineTuneSweep manifest.")] = None,
        template: Annotated[
            Path | None,
            typer.Option(help="A FineTuneJob manifest to sweep over (kubetune finetune ... -o yaml)."),
        ] = None,
        param: Annotated[
            list[str] | None,
            typer.Option(
                "--param", help="PATH=V1,V2 (grid or random) or PATH=MIN..MAX[:log] (random); repeatable."
            ),
        ] = None,
        metric: Annotated[
            str, typer.Option(help="Objective: evalLoss, evalPerplexity, evalExactMatch...")
        ] = "evalLoss",
        direction: Annotated[str, typer.Option(help="minimize or maximize.")] = "minimize",
        algorithm: Annotated[str | None, typer.Option(help="grid or random.")] = None,
        max_trials: Annotated[int | None, typer.Option("--max-trials")] = None,
        seed: Annotated[int | None, typer.Option()] = None,
        parallelism: Annotated[int | None, typer.Option(help="At most this many unfinished trials.")] = None,
        early_stopping: Annotated[
            int | None,
            typer.Option("--early-stopping", help="Stop trials worse than the best after this % of steps."),
        ] = None,
        name: Annotated[str | None, typer.Option(help="The sweep's name.")] = None,
        print_format: Annotated[
            str | None, typer.Option("-o", "--print", help="yaml or json: print, do not create.")
        ] = None,
        wait: Annotated[
            bool, typer.Option("--wait", help="Follow it to the end; the exit code says how it ended.")
        ] = False,
        timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 24 * 3600,
    ) -> None:
        """Create a FineTuneSweep (from -f FILE, or --template JOB.yaml with --param flags)."""
        from kubetune_cli.main import console, kube, print_object
        from kubetune_cli.wait import follow

        if (file is None) == (template is None):
            raise CliError("give either -f SWEEP.yaml or --template JOB.yaml with --param flags", USAGE)
        if file is not None:
            body = _read_yaml(file)
        else:
            extra = {
                k: v
                for k, v in {
                    "algorithm": algorithm,
                    "maxTrials": max_trials,
                    "seed": seed,
                    "parallelism": parallelism,
                    "earlyStopping": {"minProgressPercent": early_stopping} if early_stopping else None,
                }.items()
                if v is not None
            }
            if not param:
                raise CliError("--template needs at least one --param", USAGE)
            body = sweep_from_job(_read_yaml(template), name, param, metric, direction, extra)  # type: ignore[arg-type]
        if name:
            body["metadata"] = {**body.get("metadata", {}), "name": name}
            body["metadata"].pop("generateName", None)
        check(body)
        if print_format:
            print_object(body, print_format)
            return
        cluster = kube(ctx)
        created = cluster.create_object(SWEEP_PLURAL, body, SWEEP_KIND)
        sweep = created["metadata"]["name"]
        console.print(f"finetunesweep.kubetune.dev/{sweep} created in {cluster.namespace}")
        if wait:
            done = follow(
                lambda: cluster.get_object(SWEEP_PLURAL, sweep, SWEEP_KIND), sweep_snapshot, timeout, console
            )
            console.print(describe_sweep(done))

    @sweeps.command("get")
    def get(
        ctx: typer.Context,
        name: Annotated[str | None, typer.Argument(help="One sweep; default: all.")] = None,
        all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
        print_format: Annotated[str | None, typer.Option("-o", "--output", help="yaml or json.")] = None,
    ) -> None:
        """List FineTuneSweeps: phase, trials done, best trial and its metric."""
        from kubetune_cli.main import console, kube, print_object

        cluster = kube(ctx, all_namespaces)
        items = (
            [cluster.get_object(SWEEP_PLURAL, name, SWEEP_KIND)]
            if name
            else cluster.list_objects(SWEEP_PLURAL, "FineTuneSweeps")
        )
        if print_format:
            print_object(
                items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}, print_format
            )
            return
        console.print(sweeps_table(items))

    @sweeps.command("describe")
    def describe(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The FineTuneSweep.")]) -> None:
        """Every trial with its parameters, phase and metric; the best trial and its artifacts."""
        from kubetune_cli.main import console, kube

        console.print(describe_sweep(kube(ctx).get_object(SWEEP_PLURAL, name, SWEEP_KIND)))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CliError(f"cannot read {path}: {e}", USAGE) from e
    if not isinstance(loaded, dict):
        raise CliError(f"{path}: expected one YAML object", USAGE)
    return loaded
