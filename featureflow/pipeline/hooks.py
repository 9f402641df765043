"""Activations at TransformerLens hook names, for any causal LM that TransformerLens can boot.

featureflow's models stay plain Hugging Face `PreTrainedModel`s: they are trained, merged, evaluated and
saved with transformers. Every read or edit of an activation goes through TransformerLens's
`TransformerBridge`, which names the hooks of GPT-2, GPT-NeoX / Pythia, Llama, Mistral, Qwen2, Gemma and
dozens more with one vocabulary: `blocks.L.mlp.hook_post` (the MLP's hidden activation, the input of its
output projection), `blocks.L.hook_resid_post`, `blocks.L.hook_mlp_out`, `ln_final.hook_out`, ...

`hooked(model)` wraps a model once (cached per model object). The bridge rewires the module tree it wraps
(and renames its state_dict keys), so it wraps a *twin*: a copy of the module tree that shares every
parameter and buffer tensor with the original. The original stays an untouched HF model, and in-place
changes to its weights (`load_state_dict`, an optimiser step, `weight.mul_`) are seen through the twin.

Speed: `activations` stops the forward pass at the hook (an exception raised from the hook, the way
TransformerLens's own `stop_at_layer` works), so nothing after the hook is computed. No hand-written path
to HF modules is kept: on the demo shape (Mistral, hidden 128, d_mlp 512, vocab 4096, batches of 64 x 64
tokens, 2 shared cores, medians of 9 interleaved runs) `activations` reads 104k tokens/s against 97k for the
previous hand-mapped HF hook (which ran the whole decoder stack), and the whole `encode_sample` with a
512 -> 2048 SAE at L0 21 runs at 21.4k against 21.6k tokens/s (the SAE dominates; equal within noise), with
identical activations.
"""

from __future__ import annotations

import copy
import re
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

# hooks whose activation already lives in the residual stream (their writes need no projection)
_RESIDUAL = re.compile(r"^blocks\.(\d+)\.(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|mlp\.hook_out|"
                       r"attn\.hook_out)$")
_MLP_POST = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


class HookError(ValueError):
    """A hook name the model does not have (the message lists the ones it has)."""


class _Stop(Exception):
    """Raised from a hook to end the forward pass once the activation is recorded."""


def _placeholder_tokenizer():
    """The bridge wants a tokenizer; featureflow always hands it token ids, never text, so a one-token
    tokenizer keeps it from looking for one (on the hub, for an in-memory model)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                   unk_token="<unk>", eos_token="<unk>", pad_token="<unk>")


class HookedLM:
    """An HF causal LM seen through TransformerLens's TransformerBridge (see the module docstring)."""

    def __init__(self, model):
        import logging
        import warnings

        from transformer_lens.model_bridge import TransformerBridge

        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
        twin = copy.deepcopy(model, shared)  # new modules, the same tensors
        twin.set_attn_implementation("eager")  # as TransformerBridge.boot_transformers loads models
        self._tensor_ids = [id(t) for t in (*model.parameters(), *model.buffers())]
        p = next(model.parameters())
        tl_log = logging.getLogger("transformer_lens")
        level = tl_log.level
        tl_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.bridge = TransformerBridge.boot_transformers(
                    model.name_or_path or type(model).__name__, hf_model=twin, tokenizer=_placeholder_tokenizer(),
                    device=p.device, dtype=p.dtype)
        finally:
            tl_log.setLevel(level)
        self.bridge.eval()
        self.device = p.device
        self._widths: dict[str, int] | None = None

    def shares_tensors_with(self, model) -> bool:
        """False once `model.to(...)` or similar replaced a tensor object: the twin is then stale."""
        return self._tensor_ids == [id(t) for t in (*model.parameters(), *model.buffers())]

    # ---------------------------------------------------------------------------------- hook names
    @property
    def hook_widths(self) -> dict[str, int]:
        """Every hook an SAE can read: name -> width d of its (batch, pos, d) activation.

        Found by one two-token forward pass with every hook TransformerLens accepts; hooks that do not fire
        (attention internals of fused projections, gated-off hooks) or carry other shapes (per-head
        activations, attention patterns) are left out."""
        if self._widths is None:
            names = []
            for name in self.bridge.hook_dict:
                try:
                    self.bridge.check_hooks_to_add(name)
                except ValueError:
                    continue  # gated off until a set_use_* call
                names.append(name)
            shapes: dict[str, tuple] = {}

            def record(name):
                return lambda act, hook: shapes.__setitem__(name, tuple(act.shape))

            with torch.no_grad(), self.bridge.hooks(fwd_hooks=[(n, record(n)) for n in names]):
                self.bridge(torch.zeros(1, 2, dtype=torch.long, device=self.device), return_type=None)
            self._widths = {n: s[-1] for n, s in shapes.items() if len(s) == 3 and s[:2] == (1, 2)}
        return self._widths

    def check(self, hook: str) -> int:
        """The width at `hook`; raises HookError listing the valid hooks when the model has no such hook."""
        widths = self.hook_widths
        if hook not in widths:
            arch = type(self.bridge.original_model).__name__
            valid = sorted(widths, key=hook_order)
            raise HookError(f"hook '{hook}' does not exist in this {arch} (TransformerLens names; valid hooks: "
                            f"{', '.join(valid)})")
        return widths[hook]

    # --------------------------------------------------------------------------------- forward passes
    @torch.no_grad()
    def activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        """(batch, pos) token ids -> (batch, pos, d) float32 activations at `hook`; the forward pass stops
        at the hook."""
        self.check(hook)
        got: dict = {}

        def grab(act, hook):
            got["act"] = act
            raise _Stop

        try:
            with self.bridge.hooks(fwd_hooks=[(hook, grab)]):
                self.bridge(tokens.to(self.device), return_type=None)
        except _Stop:
            pass
        return got["act"].float()

    def logits(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.bridge(tokens.to(self.device), return_type="logits",
                           attention_mask=None if attention_mask is None else attention_mask.to(self.device))

    @torch.no_grad()
    def run(self, tokens: torch.Tensor, hooks: list[str], attention_mask: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One full forward pass: (logits, {hook: activation}) for every hook in `hooks`."""
        got: dict = {}
        for h in hooks:
            if h not in self.bridge.hook_dict:
                self.check(h)  # raises with the list of valid hooks

        def record(name):
            return lambda act, hook: got.__setitem__(name, act)

        with self.bridge.hooks(fwd_hooks=[(h, record(h)) for h in hooks]):
            logits = self.logits(tokens, attention_mask)
        return logits, got

    @contextmanager
    def splice(self, hook: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Replace the activation at `hook` by `fn(activation)` during forward passes inside the block."""
        self.check(hook)
        with self.bridge.hooks(fwd_hooks=[(hook, lambda act, hook: fn(act))]):
            yield

    # ------------------------------------------------------------------------------- direct logit effects
    @torch.no_grad()
    def residual_write(self, hook: str, directions: torch.Tensor) -> torch.Tensor | None:
        """(F, d) directions at `hook` -> (F, d_model): what each adds to the residual stream, or None where
        that is not a linear map of the hook (e.g. before an activation function).

        `blocks.L.mlp.hook_post`: through the MLP's output projection (its bias left out); residual-stream
        hooks (`hook_resid_*`, `hook_mlp_out`, `hook_attn_out`): the directions themselves."""
        directions = directions.to(self.device, torch.float32)
        m = _MLP_POST.match(hook)
        if m:
            out = self.bridge.blocks[int(m.group(1))].mlp.out
            return out(directions) - out(torch.zeros_like(directions[:1]))
        return directions if _RESIDUAL.match(hook) else None

    @torch.no_grad()
    def direct_logits(self, resid: torch.Tensor) -> torch.Tensor:
        """(F, d_model) residual writes -> (F, vocab) direct effects on the logits: the final norm's gain only
        (its per-token 1/scale left out, LayerNorm's centring kept; Gemma's 1 + w included) and the
        unembedding, biases left out. Later layers are ignored, as in direct logit attribution."""
        import warnings

        zero = torch.zeros_like(resid[:1])
        with self.bridge.hooks(fwd_hooks=[("ln_final.hook_scale", lambda s, hook: torch.ones_like(s))]), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TransformerLens notes that an edited scale leaves HF's own LayerNorm
            normed = self.bridge.ln_final(resid) - self.bridge.ln_final(zero)
        return self.bridge.unembed(normed) - self.bridge.unembed(torch.zeros_like(normed[:1]))


def hook_order(name: str):
    """Sort key for listing hooks: embedding hooks, then the blocks by layer, then ln_final / unembed."""
    m = re.match(r"^blocks\.(\d+)\.(.*)$", name)
    return (1, int(m.group(1)), m.group(2)) if m else (0 if not name.startswith(("ln_final", "unembed")) else 2, 0, name)


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def hooked(model) -> HookedLM:
    """The HookedLM of an HF model (or the HookedLM itself), built once per model object."""
    if isinstance(model, HookedLM):
        return model
    lm = _CACHE.get(model)
    if lm is None or not lm.shares_tensors_with(model):
        lm = _CACHE[model] = HookedLM(model)
    return lm
