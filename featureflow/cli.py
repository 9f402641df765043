"""`featureflow` command line: run the pipeline, report on a store, serve the explorer."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from featureflow.config import ConfigError, load_config
from featureflow.modes import all_modes
from featureflow.pipeline.artifacts import PipelineError  # torch-free (pydantic only)

# What the `pipeline` extra installs that the pipeline's commands import (import names). The base install
# (explorer, report, export, import) has none of them.
PIPELINE_MODULES = ("torch", "transformers", "tokenizers", "safetensors", "transformer_lens", "sae_lens", "mergekit",
                    "datasets", "tqdm", "scipy", "numba", "sklearn", "pyarrow")


class ExtraMissing(ValueError):
    """A command needs an optional extra that is not installed (exit 2, one line)."""


def need_pipeline(cmd: str) -> None:
    """Refuse a pipeline command in a base install, naming the extra, before anything imports torch. Off a
    terminal, other libraries' progress bars are switched off before they load (featureflow.progress)."""
    missing = [m for m in PIPELINE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissing(f"`featureflow {cmd}` needs the pipeline extra ({', '.join(missing)} not installed): "
                           "pip install 'featureflow[pipeline]'")
    from featureflow.progress import quiet_other_bars

    quiet_other_bars()


def _log_progress() -> None:
    """Progress lines (featureflow.progress) of the light commands to stderr, as the pipeline logs its own."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def _validate(args) -> int:
    need_pipeline("validate")
    from featureflow.pipeline.validate import check_config

    cfg = load_config(args.config)
    v = check_config(cfg, args.config)  # raises ConfigError (exit 2) with every fault
    for line in v.notes:
        print(f"  {line}")
    print(f"{args.config}: valid ({len(cfg.family)} members, hook {cfg.sae.hook})")
    return 0


def _run(args) -> int:
    need_pipeline("run")
    if args.executor == "ray":
        from featureflow.pipeline.executors import need_ray

        need_ray()  # before any work: the one line naming the extra
    from featureflow.pipeline.runner import Pipeline, setup_logging
    from featureflow.pipeline.validate import check_config

    setup_logging()
    cfg = load_config(args.config)
    check_config(cfg, args.config)  # the same checks as `featureflow validate`, before any work
    pl = Pipeline(cfg, device=args.device)
    t0 = time.time()
    if args.executor == "ray":  # every task on Ray, then the store here (its stages find every artefact done)
        from featureflow.pipeline.executors import run_ray

        run_ray(cfg, pl.device, stage=args.stage, address=args.address, num_cpus=args.num_cpus)
        # the store's timings: the Ray phase's wall time, then the driver's stages (which find every artefact done)
        pl.stage_seconds["ray: every task"] = round(time.time() - t0, 2)
    pl.run(args.stage)
    logging.getLogger("featureflow").info("pipeline '%s' finished in %.1f s (device %s)", cfg.name,
                                          time.time() - t0, pl.device)
    return 0


def _plan(args) -> int:
    need_pipeline("plan")
    import json

    from featureflow.pipeline.plan import make_plan

    cfg = load_config(args.config)
    plan = make_plan(cfg, device=args.device or "cpu", upto=args.stage)
    print(json.dumps(plan.as_json(), indent=1) if args.json else plan.format())
    return 0


def _report(args) -> int:
    from featureflow.report import print_report

    print_report(args.db, threshold=args.threshold, mode=args.mode)
    return 0


def _export(args) -> int:
    from featureflow.store.export import export

    _log_progress()

    t0 = time.time()
    kw = {"creator_id": args.creator_id} if args.format == "neuronpedia" else {}
    out = export(args.db, args.out, args.format, **kw)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported '{args.db}' as {args.format} to {out} ({size / 1e6:.1f} MB) in {time.time() - t0:.1f} s")
    return 0


def _import(args) -> int:
    from featureflow.store.export import import_parquet

    _log_progress()

    t0 = time.time()
    db = import_parquet(args.src, args.db, force=args.force)
    print(f"rebuilt store {db} from '{args.src}' in {time.time() - t0:.1f} s; serve it with "
          f"`featureflow serve --db {db}`")
    return 0


def _planted(args) -> int:
    """Build the planted family of a config (a file with a `planted:` section, or a run config that has one),
    score every mode's fate calls against the planted truth, write the scorecard JSON and print its table."""
    from featureflow.config import load_planted
    from featureflow.pipeline.planted import format_scorecard, run_planted, write_scorecard
    from featureflow.pipeline.runner import setup_logging

    setup_logging(verbose=args.verbose)
    planted, sae, matching = load_planted(args.config)
    out = Path(args.out)
    if not out.parent.exists():
        raise ValueError(f"--out: folder '{out.parent}' does not exist")
    card = run_planted(planted, sae, matching, device=args.device or "cpu", progress=args.verbose)
    write_scorecard(card, out)
    print(format_scorecard(card))
    print(f"wrote {out}")
    return 0


def _gc(args) -> int:
    """List (or with --delete remove) artefact folders under data/<run>/ that the config no longer reaches."""
    need_pipeline("gc")
    from featureflow.pipeline.artifacts import remove, size_of, stale_artefacts
    from featureflow.pipeline.runner import Pipeline

    cfg = load_config(args.config)
    pl = Pipeline(cfg, device="cpu")
    stale = stale_artefacts(pl.root, pl.live_artefacts())
    total = 0
    for path in stale:
        size = size_of(path)
        total += size
        print(f"{size / 1e6:10.1f} MB  {path}")
        if args.delete:
            remove(path)
    verb = "removed" if args.delete else "would remove"
    print(f"{verb} {len(stale)} folder(s) not reached by '{args.config}', {total / 1e6:.1f} MB"
          + ("" if args.delete or not stale else "; pass --delete to remove them"))
    return 0


def _serve(args) -> int:
    """One worker: the app built here. Several: worker processes (`featureflow.explorer.serving.run_workers`), each a uvicorn
    server building it from the factory `featureflow.explorer.serving:app_from_env` on the store named by $FEATUREFLOW_DB, once it
    has started here (so a missing store or front-end file is refused with its message before any worker starts)."""
    import uvicorn

    from featureflow.explorer.app import create_app
    from featureflow.explorer.queries import StoreError
    from featureflow.explorer.serving import DB_ENV, THREADS_ENV, run_workers

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {args.workers})")
    try:
        app = create_app(args.db)  # VendorMissing (a FileNotFoundError) names the missing front-end files
    except StoreError as e:  # no store, or one of another schema version
        raise ValueError(str(e)) from None
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
        return 0
    app.state.store.close()
    os.environ[DB_ENV] = str(Path(args.db).resolve())
    os.environ[THREADS_ENV] = str(max(1, cores() // args.workers))  # the workers share the cores
    return run_workers(args.host, args.port, args.workers)


def cores() -> int:
    """CPU cores this process may run on (the default number of workers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def registered_names() -> str:
    """The config's registered values (`featureflow --help`): matching modes, evidence kinds, SAE architectures
    and merge methods."""
    from featureflow import evidence, merges, saes

    return ("registered config values (README, 'Extending featureflow'):\n"
            f"  matching.modes: {', '.join(all_modes())}\n"
            f"  matching.evidence: {', '.join(evidence.EVIDENCE)}\n"
            f"  sae.architecture: {', '.join(saes.names())}\n"
            f"  method of a merge member: {', '.join(merges.names())}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="featureflow", description=__doc__, epilog=registered_names(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline (every stage, or one stage and what it needs)")
    r.add_argument("--config", required=True)
    r.add_argument("--stage", default=None, help="run up to and including this stage")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    r.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: this process runs every stage (default); ray: every task that is not done runs on "
                   "Ray (the `ray` extra), then the store is built here")
    r.add_argument("--address", default=None, help="ray: a running cluster's address (default: start Ray here)")
    r.add_argument("--num-cpus", type=int, default=None, help="ray, started here: CPUs it may use (default: all)")
    r.set_defaults(fn=_run)
    pl = sub.add_parser("plan", help="print the task graph: each task, its artefacts (their keys) and inputs, done or "
                        "not, and the critical path; nothing is built")
    pl.add_argument("--config", required=True)
    pl.add_argument("--stage", default=None, help="plan up to and including this stage")
    pl.add_argument("--device", default=None, help="the device keys are planned for (default: cpu)")
    pl.add_argument("--json", action="store_true", help="the plan as JSON")
    pl.set_defaults(fn=_plan)
    va = sub.add_parser("validate", help="check a config and everything it names (paths, tokenizer, models, hooks, "
                        "SAEs, shapes) without running anything")
    va.add_argument("--config", required=True)
    va.set_defaults(fn=_validate)
    rep = sub.add_parser("report", help="print flow counts per edge from a store")
    rep.add_argument("--db", required=True)
    rep.add_argument("--threshold", type=float, default=None,
                     help="similarity above which a match persists (default: the run's)")
    rep.add_argument("--mode", default=None, help="one stored matching mode (default: every mode); modes are a "
                     "registered similarity and rule: " + ", ".join(all_modes()))
    rep.set_defaults(fn=_report)
    ex = sub.add_parser("export", help="export a store: every table as Parquet (+ manifest, README of columns), or "
                        "per-model feature dashboards in Neuronpedia's export layout")
    ex.add_argument("--db", required=True)
    ex.add_argument("--format", required=True, choices=["parquet", "neuronpedia"])
    ex.add_argument("--creator-id", default="featureflow", help="neuronpedia: the creatorId / authorId written "
                    "(Neuronpedia's import replaces it with its own default creator)")
    ex.add_argument("out", metavar="DIR", help="output folder (must not exist, or be empty)")
    ex.set_defaults(fn=_export)
    im = sub.add_parser("import", help="rebuild a store from a Parquet export (`featureflow export --format parquet`)")
    im.add_argument("--from", dest="src", required=True, metavar="DIR")
    im.add_argument("--db", required=True, help="the store to write")
    im.add_argument("--force", action="store_true", help="replace the store if it exists")
    im.set_defaults(fn=_import)
    pt = sub.add_parser("planted", help="score every matching mode's persist / emerge / disappear calls against a "
                        "planted family's truth (precision, recall, F1) and print the scorecard")
    pt.add_argument("--config", required=True, help="a file with a `planted:` section (configs/planted.yaml), or a "
                    "run config that has one")
    pt.add_argument("--out", required=True, help="the scorecard JSON to write")
    pt.add_argument("--device", default=None, help="cpu or cuda, for Pearson matching (default: cpu)")
    pt.add_argument("--verbose", action="store_true", help="progress bars and per-SAE log lines")
    pt.set_defaults(fn=_planted)
    g = sub.add_parser("gc", help="list artefacts under data/<run>/ that no key of the config reaches "
                       "(and temp debris of killed runs); --delete removes them")
    g.add_argument("--config", required=True)
    g.add_argument("--delete", action="store_true", help="remove them (default: a dry run that only lists)")
    g.set_defaults(fn=_gc)
    s = sub.add_parser("serve", help="serve the explorer on a store (read-only)")
    s.add_argument("--db", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=cores(), help="worker processes (default: the number of cores, "
                   f"{cores()} here); each opens the store read-only")
    s.set_defaults(fn=_serve)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:  # one line per fault: `config.yaml: field: message`
        for line in str(e).splitlines():
            print(f"featureflow: error: {line}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"featureflow: error: {e}", file=sys.stderr)
        return 2
    except PipelineError as e:  # a stage stopped for a reason the user must fix (e.g. the LLM refused the key)
        print(f"featureflow: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
