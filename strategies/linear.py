"""The decode step's matrix products, in the form each device runs fastest.

A layer's products are four callables (`Mats`): q/k/v, the attention output, gate/up and down.
The same layer code (layers.py) calls them whatever they are:

- `module_mats`: the model's own nn.Linear modules (prefill, and the reference the others are
  tested against);
- `weight_major_mats`: the same weights with the product taken as (W xᵀ)ᵀ, which MKL runs faster
  than x Wᵀ at decode batch sizes; the CPU fallback when oneDNN packing is unavailable;
- `fused_mats` (CUDA): q/k/v and gate/up stored as one matrix each, so a step makes one wide
  product where it made three (and two); the modules' weights become views of the fused
  matrices, so nothing is stored twice;
- `packed_mats` (CPU): q/k/v and gate/up fused likewise, and every matrix reordered once into
  oneDNN's blocked layout. A plain GEMM re-packs its weight on every call; at 1–64 rows that
  packing is most of the work, so the prepacked products run 1.3–2.5× faster (the 49k-row LM
  head 2×; docs/performance.md). The packed copies replace the modules' weights: see "One copy
  of the weights" below.

The packed products go through `torch.ops.mkldnn._reorder_linear_weight` and
`torch.ops.mkldnn._linear_pointwise`, the ops torch.compile's CPU backend itself emits for frozen
linear layers. They are below torch's public API: `packing_available` probes them once and the
decoder falls back to the weight-major form where they are missing or disagree with F.linear.

One copy of the weights (CPU): once a layer is packed, `release` drops its q/k/v/o/gate/up/down
modules' weights (and an untied LM head's), leaving meta-device placeholders of the same shape
and dtype, so the process holds the packed copy only. Everything that still wants the dense
weights gets them back exactly, on demand: a forward pre-hook on each released layer, linear
module and head (transformers' own forward and generate(), a SoftCoT assistant or LLM judge that
is the generating model itself, teacher-forced passes) and `Layers.mats` for the unpacked forms
call `restore`, which reads each matrix back out of oneDNN's layout (`to_dense` is a reordering,
not arithmetic: bit-equal) and removes the hooks. A restored model holds two copies again, as it
did before release. Not released: the embedding, which the input lookup reads by row; a tied LM
head is that same matrix, so its packed copy (vocabulary × hidden) is the one weight held twice —
dropping it would mean running the head unpacked, 2× slower on CPU.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from strategies import cpu

Product = Callable[[torch.Tensor], torch.Tensor]


class Mats(NamedTuple):
    """One layer's products; qkv and gate_up return their parts as a tuple. Forms that fuse q/k/v
    also give `qkv_joint`, the fused product unsplit ([N, (heads + 2 kv_heads) · head_dim]), and
    `gate_up_joint` ([N, 2 · intermediate], gate first)."""
    qkv: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    o: Product
    gate_up: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    down: Product
    qkv_joint: Product | None = None
    gate_up_joint: Product | None = None


def _weight_major(module: torch.nn.Linear, contiguous: bool = False) -> Product:
    """module(x) for x [N, in] computed as (W xᵀ)ᵀ: a transposed view, which elementwise ops and
    the next product take as it is; queries are made row-major because SDPA's fused CPU kernel
    needs unit-stride heads."""
    def product(x):
        y = (module.weight @ x.T).T
        if contiguous:
            y = y.contiguous()
        return y if module.bias is None else y + module.bias
    return product


def module_mats(layer) -> Mats:
    a, m = layer.self_attn, layer.mlp
    return Mats(lambda x: (a.q_proj(x), a.k_proj(x), a.v_proj(x)), a.o_proj,
                lambda x: (m.gate_proj(x), m.up_proj(x)), m.down_proj)


def weight_major_mats(layer) -> Mats:
    a, m = layer.self_attn, layer.mlp
    q, k, v = _weight_major(a.q_proj, contiguous=True), _weight_major(a.k_proj), _weight_major(a.v_proj)
    gate, up = _weight_major(m.gate_proj), _weight_major(m.up_proj)
    return Mats(lambda x: (q(x), k(x), v(x)), _weight_major(a.o_proj),
                lambda x: (gate(x), up(x)), _weight_major(m.down_proj))


def _splitter(product: Product, sizes: list[int]):
    return lambda x: product(x).split(sizes, dim=-1)


def fused_mats(layer) -> Mats:
    """q/k/v and gate/up as one product each. Cached on the layer: every decoder of one model
    shares the fused matrices (fusing twice would re-view already fused weights)."""
    cached = getattr(layer, "_tts_fused", None)
    if cached is None:
        a, m = layer.self_attn, layer.mlp
        qkv, gu = [a.q_proj, a.k_proj, a.v_proj], [m.gate_proj, m.up_proj]
        w_qkv, b_qkv, w_gu = _fuse_weights(qkv), _fuse_biases(qkv), _fuse_weights(gu)
        joint = lambda x: F.linear(x, w_qkv, b_qkv)  # noqa: E731
        joint_gu = lambda x: F.linear(x, w_gu)  # noqa: E731
        cached = layer._tts_fused = Mats(
            _splitter(joint, [p.weight.shape[0] for p in qkv]), a.o_proj,
            _splitter(joint_gu, [p.weight.shape[0] for p in gu]), m.down_proj, joint, joint_gu)
    return cached


# ----- oneDNN-packed weights (CPU) ------------------------------------------------------------
_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
BATCH_HINT = 64   # the row count oneDNN lays the weights out for; every other count runs on them too


class Packed:
    """y = x Wᵀ + b through a weight reordered once into oneDNN's blocked layout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.w = _REORDER(weight.detach(), BATCH_HINT)
        self.b = None if bias is None else bias.detach().clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _LINEAR(x, self.w, self.b, "none", [], "")

    def dense(self) -> torch.Tensor:
        """W back in its ordinary layout, bit-equal (a reorder, no arithmetic)."""
        return self.w.to_dense()



@lru_cache(maxsize=None)
def packing_available(dtype: torch.dtype) -> bool:
    """Whether this torch build has the packed ops and they compute F.linear (checked once)."""
    if _REORDER is None or _LINEAR is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(48, 40, generator=g).to(dtype), torch.randn(48, generator=g).to(dtype)
        with torch.inference_mode():
            for rows in (1, 5):
                x = torch.randn(rows, 40, generator=g).to(dtype)
                got, want = Packed(w, b)(x).float(), F.linear(x, w, b).float()
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-2, atol=1e-2):
                    return False
        return True
    except Exception:  # noqa: BLE001 - any failure means: use the unpacked products
        return False


def packed_mats(layer) -> Mats:
    """Packed q/k/v, o, gate/up and down. Cached on the layer, so decoders built one after the
    other over one model (benchmarks, SoftCoT's assistant) pack it once; `layer._tts_packs` says
    which modules each packed matrix holds, row block after row block (for `restore`)."""
    cached = getattr(layer, "_tts_packed", None)
    if cached is None:
        restore(layer)   # packing reads the dense weights
        a, m = layer.self_attn, layer.mlp
        qkv, gu = [a.q_proj, a.k_proj, a.v_proj], [m.gate_proj, m.up_proj]
        with torch.no_grad():
            cat = lambda mods: torch.cat([p.weight for p in mods])  # noqa: E731
            p_qkv, p_o = Packed(cat(qkv), _fuse_biases(qkv, view=False)), Packed(a.o_proj.weight, a.o_proj.bias)
            p_gu, p_down = Packed(cat(gu)), Packed(m.down_proj.weight, m.down_proj.bias)
        layer._tts_packs = [(p_qkv, qkv), (p_o, [a.o_proj]), (p_gu, gu), (p_down, [m.down_proj])]
        cached = layer._tts_packed = Mats(
            _splitter(p_qkv, [p.weight.shape[0] for p in qkv]), p_o,
            _splitter(p_gu, [p.weight.shape[0] for p in gu]), p_down, p_qkv, p_gu)
    return cached


def head(kind: str, module: torch.nn.Linear) -> Product:
    """The LM head's product in the layers' form (`kind` as in MATS); fused and module forms
    use the module itself, which is one matrix already. A packed head is cached on the module."""
    if kind != "packed":
        restore(module)   # the unpacked forms read the module's weight
        return _weight_major(module, contiguous=True) if kind == "weight_major" else module
    cached = getattr(module, "_tts_packed", None)
    if cached is None:
        with torch.no_grad():
            cached = module._tts_packed = Packed(module.weight, module.bias)
        module._tts_packs = [(cached, [module])]
    return cached


# ----- one copy of the weights (CPU) ----------------------------------------------------------
def release(owner: torch.nn.Module, keep: tuple[torch.Tensor, ...] = ()) -> int:
    """Drop the dense weights of the modules `owner` (a packed layer or head) has packed copies
    of, except tensors in `keep` (a tied head's embedding); returns the bytes dropped. Their
    placeholders are meta tensors of the same shape and dtype, so parameter counts stay right
    and a use that bypasses the restoring hooks fails loudly instead of computing garbage."""
    packs = getattr(owner, "_tts_packs", None)
    if packs is None or getattr(owner, "_tts_hooks", None):
        return 0
    dropped, hooked = 0, [owner]
    for _, modules in packs:
        for mod in modules:
            w = mod.weight
            if any(w is k for k in keep) or w.is_meta:
                continue
            dropped += w.numel() * w.element_size()
            mod.weight = torch.nn.Parameter(torch.empty(w.shape, dtype=w.dtype, device="meta"),
                                            requires_grad=w.requires_grad)
            mod._tts_device = w.device
            if mod is not owner:
                hooked.append(mod)
            # Nothing else holds it (Python: this frame's name and getrefcount's argument; its
            # storage: w and `st`), so its pages can go even where its memory is part of a
            # larger mapping that outlives it (cpu.discard_pages).
            st = w.untyped_storage()
            if sys.getrefcount(w) == 2 and torch._C._storage_Use_Count(st._cdata) == 2:
                cpu.discard_pages(w)
            del w, st
    if dropped:
        owner._tts_hooks = [m.register_forward_pre_hook(lambda *_: restore(owner)) for m in hooked]
    return dropped


def restore(owner: torch.nn.Module) -> None:
    """Put back the dense weights `release` dropped, bit-equal to the originals (see the module
    docstring); a no-op where nothing was released."""
    hooks = getattr(owner, "_tts_hooks", None)
    if not hooks:
        return
    for h in hooks:
        h.remove()
    owner._tts_hooks = None
    # outside inference mode: the weights may later take part in autograd (SoftCoT training)
    with torch.inference_mode(False), torch.no_grad():
        for pack, modules in owner._tts_packs:
            if not any(m.weight.is_meta for m in modules):
                continue
            at, w = 0, pack.dense()
            for mod in modules:
                n = mod.weight.shape[0]
                if mod.weight.is_meta:
                    mod.weight = torch.nn.Parameter(w[at: at + n].clone().to(mod._tts_device),
                                                    requires_grad=mod.weight.requires_grad)
                at += n


def restore_model(model) -> None:
    """Every released weight of `model` back (see `restore`); for code about to run the model's
    own forward many times, e.g. a timed generate(), so the restoring is not inside its timer."""
    for mod in model.modules():
        restore(mod)


# ----- fusing ---------------------------------------------------------------------------------
def _fuse_weights(modules) -> torch.Tensor:
    w = torch.cat([m.weight for m in modules])
    at = 0
    for m in modules:
        n = m.weight.shape[0]
        m.weight = torch.nn.Parameter(w[at: at + n], requires_grad=False)
        at += n
    return w


def _fuse_biases(modules, view: bool = True) -> torch.Tensor | None:
    """The modules' biases as one vector (zeros where one has none); with `view`, the modules'
    own biases become views of it."""
    if all(m.bias is None for m in modules):
        return None
    b = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.weight.shape[0]) for m in modules])
    at = 0
    for m in modules:
        n = m.weight.shape[0]
        if view and m.bias is not None:
            m.bias = torch.nn.Parameter(b[at: at + n], requires_grad=False)
        at += n
    return b.detach()


MATS = {"module": module_mats, "weight_major": weight_major_mats, "fused": fused_mats, "packed": packed_mats}
