"""`featureflow` command line: run the pipeline, report on a store, serve the explorer."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .config import ConfigError, load_config


def _run(args) -> int:
    from .pipeline import Pipeline, setup_logging

    setup_logging()
    cfg = load_config(args.config)
    pl = Pipeline(cfg, device=args.device)
    t0 = time.time()
    pl.run(args.stage)
    logging.getLogger("featureflow").info("pipeline '%s' finished in %.1f s (device %s)", cfg.name,
                                          time.time() - t0, pl.device)
    return 0


def _report(args) -> int:
    from .report import print_report

    print_report(args.db)
    return 0


def _serve(args) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(create_app(args.db), host=args.host, port=args.port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="featureflow", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the pipeline (every stage, or one stage and what it needs)")
    r.add_argument("--config", required=True)
    r.add_argument("--stage", default=None, help="run up to and including this stage")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    r.set_defaults(fn=_run)
    rep = sub.add_parser("report", help="print flow counts per edge from a store")
    rep.add_argument("--db", required=True)
    rep.set_defaults(fn=_report)
    s = sub.add_parser("serve", help="serve the explorer on a store (read-only)")
    s.add_argument("--db", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.set_defaults(fn=_serve)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"featureflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
