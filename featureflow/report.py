"""`featureflow report`: the paper's Figure 2 in text, read from a store through the explorer's queries."""

from __future__ import annotations

from pathlib import Path


def print_report(db: str, threshold: float | None = None, mode: str | None = None) -> None:
    """Flows per edge and mode at `threshold` (default: the run's), beside each edge's noise floor; with
    `mode`, that stored matching mode only. Everything is recomputed from the stored matches."""
    from featureflow.explorer.queries import Store
    from featureflow.store.flows import mode_label

    if not Path(db).exists():
        raise FileNotFoundError(f"store '{db}' does not exist (run `featureflow run --config ...` first)")
    if threshold is not None and not -1 < threshold < 1:
        raise ValueError(f"--threshold {threshold} is outside (-1, 1): similarities are correlations or cosines")
    store = Store(db)
    t = store.run["default_threshold"] if threshold is None else threshold
    try:
        modes = store.modes if mode is None else [store.mode(mode)]
    except ValueError:
        store.close()
        raise
    init = ("every SAE shares one seed (sae.shared_init: the paper's setup)" if store.run["shared_init"]
            else "each SAE has its own seed")
    print(f"run {store.run['name']}: feature flows per edge, similarity > {t} persists; {init}; "
          "matching across models uses replica 0 of each SAE")
    for mode in modes:
        print(f"\nmode {mode} ({mode_label(mode)}){'  [default]' if mode == store.default_mode else ''}")
        print(f"{'edge':32s} {'persist':>8s} {'vanish':>8s} {'inherit':>8s} {'emerge':>8s} {'persist%':>9s} "
              f"{'floor%':>8s} {'same-idx':>8s}  floor from")
        for r in store.flows(t, mode):
            edge = f"{r['parent']} -> {r['child']}"
            floor = "    n/a" if r["floor_share"] is None else f"{100 * r['floor_share']:7.1f}%"
            print(f"{edge:32s} {r['persisting']:8d} {r['disappearing']:8d} {r['inherited']:8d} {r['emerging']:8d} "
                  f"{100 * r['persist_share']:8.1f}% {floor} {r['same_index']:8d}  {r['floor_source'] or 'no replicas'}")
        for f in store.floors(t, mode):
            print(f"  floor {f['model']}: {f['matched']} of {f['alive']} alive features ({100 * f['share']:.1f}%) "
                  f"match another seed replica; mean match r {f['mean_r']:.3f}")
    print(f"\nalive features by origin (stored lineage: mode {store.default_mode}, threshold "
          f"{store.run['default_threshold']}; where their chain of persisting matches starts):")
    for r in store.origin_counts():
        print(f"  {r['model']:20s} from {r['origin_model']:20s} {r['n']:6d}")
    print("\nSAE health:")
    for m in store.overview_models():
        lr = "n/a" if m["loss_recovered"] is None else f"{m['loss_recovered']:.3f}"
        print(f"  {m['model']:20s} L0 {m['l0']:6.1f}  MSE {m['mse']:.4g}  expl.var {m['explained_variance']:.3f}  "
              f"dead {m['dead_features']}/{m['d_sae']} (silent on {m['eval_tokens']:,} held-out tokens; alive on the "
              f"sample: {m['alive']})  loss recovered {lr} ({m['loss_recovered_scope']})")
    store.close()
