"""SAE architectures: one registered `SAEArchitecture` per file (`standard.py`, `topk.py`, `batchtopk.py`).

An architecture says everything `featureflow/pipeline/sae.py` needs to train, save and resample an SAE of its
kind: its activation (per token at inference, and the one it trains with), whether the loss has the L1 term
λ Σ|f| (and so a λ, steerable to `sae.target_l0`), how many latents per token it keeps (`k`), the SAELens
architecture it is saved as (and loaded back through SAELens), and how dead-latent resampling scales the
encoder. `sae.architecture` in a config takes any registered name.

Adding one is one new file holding a subclass and a `register(...)` call (README, "Extending featureflow").
Its SAELens architecture must be one SAELens registers (`sae_lens.registry`: standard, topk, jumprelu, gated,
...); one SAELens lacks is registered with SAELens from `saelens_classes()` the first time an SAE of it is
saved or loaded. Importing this package imports neither torch nor SAELens.
"""

from __future__ import annotations

from typing import Any

from featureflow.registry import Registry

_REGISTRY: Registry["SAEArchitecture"] = Registry("SAE architecture")


class SAEArchitecture:
    """One SAE architecture. Subclass it in its own file, set the class attributes, write `activation`, and
    `register` an instance. f = activation(pre) with pre = W_e (x − μ − b_d) + b_e; x̂ = W_d f + b_d + μ."""

    name: str = ""              # what `sae.architecture` names it by
    label: str = ""             # a short human name
    description: str = ""       # one line for the config's help and the README
    saved_as: str = "standard"  # the SAELens architecture it is saved as (`cfg.json`'s "architecture")
    l1_penalty: bool = False    # loss = MSE + λ Σ|f| (λ = l1_coefficient, or steered to target_l0); else MSE
    uses_k: bool = False        # keeps k latents per token (`sae.k`, default round(target_l0), else 32)
    resample_scale: float = 0.2  # a resampled latent's encoder column: its direction × this × mean live norm

    def sae_k(self, cfg) -> int | None:
        """Latents per token: `cfg.k`, else round(cfg.target_l0), else 32; None when the architecture has no k."""
        if not self.uses_k:
            return None
        if cfg.k is not None:
            return int(cfg.k)
        return max(1, int(round(cfg.target_l0))) if cfg.target_l0 is not None else 32

    def activation(self, pre, k: int | None, inplace: bool = False):
        """f from the pre-activations (rows, d_sae), per token: what the saved SAE computes.
        `inplace`: the caller no longer needs `pre`, which may be overwritten."""
        raise NotImplementedError

    def train_activation(self, pre, k: int | None, inplace: bool = False):
        """f while training (default: `activation`). `sae.py`'s hand-written sparse backward pass holds for any
        activation that keeps pre on a set of positive entries and is 0 elsewhere."""
        return self.activation(pre, k, inplace)

    def saelens_config(self, k: int | None) -> dict[str, Any]:
        """Fields of the SAELens config beyond d_in, d_sae, dtype, device, apply_b_dec_to_input, metadata."""
        return {}

    def saelens_classes(self) -> tuple[type, type] | None:
        """(SAE class, config class) to register with SAELens under `saved_as` when SAELens has none."""
        return None

    def __repr__(self) -> str:
        return f"<SAE architecture '{self.name}' ({self.label}), saved as SAELens '{self.saved_as}'>"


def register(arch: SAEArchitecture) -> SAEArchitecture:
    """Make `arch` available to `sae.architecture` by its name; names are unique."""
    return _REGISTRY.add(arch.name, arch)  # a name empty or taken: ValueError


def unregister(name: str) -> None:
    """Remove a registered architecture (tests registering a toy one clean up with it)."""
    _REGISTRY.remove(name)


def names() -> list[str]:
    """Registered architecture names, in registration order."""
    return list(_REGISTRY)


def get(name: "str | SAEArchitecture") -> SAEArchitecture:
    """The architecture registered as `name`; ValueError naming the registered ones otherwise."""
    if isinstance(name, SAEArchitecture):
        return name
    return _REGISTRY.lookup(name)


def saelens_classes(arch: SAEArchitecture) -> tuple[type, type]:
    """SAELens's (SAE class, config class) for `arch.saved_as`, from SAELens's own registry
    (`sae_lens.registry.get_sae_class`); registered there first from `arch.saelens_classes()` where SAELens has
    none. SAELens's own architectures are never registered twice."""
    import sae_lens  # noqa: F401  (its import registers SAELens's own architectures)
    from sae_lens.registry import SAE_CLASS_REGISTRY, get_sae_class, register_sae_class

    if arch.saved_as not in SAE_CLASS_REGISTRY:
        own = arch.saelens_classes()
        if own is None:
            raise ValueError(f"SAE architecture '{arch.name}' is saved as SAELens '{arch.saved_as}', which SAELens "
                             f"does not register ({', '.join(SAE_CLASS_REGISTRY)}); give it saelens_classes()")
        register_sae_class(arch.saved_as, *own)
    return get_sae_class(arch.saved_as)


def ensure_saelens_registered() -> None:
    """Register with SAELens every architecture's own SAELens classes it lacks (before loading a folder)."""
    import sae_lens  # noqa: F401
    from sae_lens.registry import SAE_CLASS_REGISTRY

    for arch in _REGISTRY.values():
        if arch.saved_as not in SAE_CLASS_REGISTRY and arch.saelens_classes() is not None:
            saelens_classes(arch)


def describe() -> str:
    """'name: description; ...' for every registered architecture (config help, README)."""
    return "; ".join(f"{a.name}: {a.description}" for a in _REGISTRY.values())


# the built-in architectures register themselves on import
from featureflow.saes import standard, topk, batchtopk  # noqa: E402,F401
