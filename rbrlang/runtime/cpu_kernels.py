"""Which kernels an HFGrader's fp32 linear layers run on a CPU, chosen once
by an exactness probe (issue 15 item 2): `prepare(model, kernels)`.

torch sends fp32 `F.linear` to MKL's sgemm. oneDNN's fp32 matmul is faster
on some CPUs (measured on an AVX-512-BF16 AMD part: 185-228 GFLOP/s against
MKL's 76-96), and the only public switch that sends fp32 linear layers to
it is `torch.backends.mkldnn.matmul.fp32_precision = "bf16"`. That switch
*permits* bf16: where oneDNN has bf16 hardware for the product (AMX) it
really rounds to bf16 (relative error ~2e-3, far outside the 1e-5 the
grader promises), and elsewhere it was measured to stay fp32. So it is used
only where a probe at start-up finds it exact: the model's own (in, out)
shapes, several row counts, against float64. Where it is not exact the
grader stays on MKL. bench/kernels.py measures every route (and the private
ones a prototype used) at the real shapes; bench/RESULTS.md has the figures.

The setting is global in torch, so it is never left set: forward hooks on the
model's body and its output layer put the chosen value in place for the
model's own forward and put back whatever was there when it returns (or
raises). The choice also pins the fp32 product where nothing is chosen: a
user's `torch.set_float32_matmul_precision("medium")` turns stock fp32
linear layers into bf16 ones on an AMX CPU, which the grade cache (keyed as
fp32) would not know; inside the model's forward it is "ieee" unless the
probe allowed "bf16". Either way what runs is fp32, so the grader's identity
(its cache key) is the same for both routes.

The hooks pickle as what was asked for and probe again where they are
unpickled: a grader pickled on an AMD worker may be unpickled on an AMX one.

`torch.compile` of the decoder layers (fusing RMSNorm, SiLU·mul, rotary and
the residual adds) was measured too and is not used; see bench/RESULTS.md.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNELS = ("auto", "stock")
# fp32 rounding of a dot product of a few thousand terms is ~1e-7..1e-6 relative;
# bf16 rounding is ~1e-3. Anything between is treated as not fp32.
TOLERANCE = 1e-5
# Rows per product the probe tries: one row (the output layer's), a short and a long batch;
# oneDNN picks its kernel by shape, so each may differ.
PROBE_ROWS = (1, 23, 640)
_FAST = "bf16"  # the public setting that lets oneDNN take fp32 linear layers
_EXACT = "ieee"


@dataclass(frozen=True)
class Kernels:
    """What `prepare` chose (HFGrader.kernels).

    requested: "auto" or "stock"; linear: "onednn" (oneDNN's fp32 matmul,
    probed exact), "mkl" (torch's default, pinned to fp32), or "stock"
    (nothing touched: the user's torch settings apply); probe_error: the
    largest relative error the probe saw for oneDNN (None: not probed);
    reason: one line saying why.
    """

    requested: str
    linear: str
    probe_error: float | None
    reason: str


def prepare(model, kernels: str = "auto", *, reference: torch.dtype = torch.float64) -> Kernels:
    """Choose the linear layers' kernels for `model` and install the hooks
    that apply the choice during its forward (idempotent: a model already
    prepared is re-probed, not hooked twice). `reference`: the precision the
    probe compares against; a lossy one (bfloat16) makes any route fail it,
    which is how the tests see the fallback."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {', '.join(KERNELS)}; got {kernels!r}")
    body, head = model.base_model, model.get_output_embeddings()
    pins = [h for m in (body, head) if m is not None for h in m._forward_pre_hooks.values() if isinstance(h, _Pin)]
    if kernels == "stock":
        for pin in pins:
            pin.precision = None
        return Kernels("stock", "stock", None, "kernels='stock': torch's own settings and kernels")
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return Kernels(kernels, "stock", None, f"{weight.device.type} {weight.dtype}: the probe is for fp32 on CPU")
    shapes = tuple(sorted({tuple(m.weight.shape[::-1]) for m in model.modules() if isinstance(m, torch.nn.Linear)}))
    choice = _choose(shapes, reference)
    if pins:
        for pin in pins:
            pin.shapes, pin.reference, pin.precision = shapes, reference, choice.setting
    else:
        for module in (body, head):
            if module is not None:
                pin = _Pin(shapes, reference, choice.setting)
                module.register_forward_pre_hook(pin)
                module.register_forward_hook(pin.restore, always_call=True)
    return Kernels(kernels, choice.linear, choice.error, choice.reason)


@dataclass(frozen=True)
class _Choice:
    linear: str
    setting: str
    error: float
    reason: str


@functools.lru_cache(maxsize=None)
def _choose(shapes: tuple, reference: torch.dtype) -> _Choice:
    """Probe oneDNN's route at every (in, out) shape of the model; once per process per model shape."""
    error = max(probe(k, n, rows, reference=reference) for k, n in shapes for rows in PROBE_ROWS)
    if error <= TOLERANCE:
        return _Choice("onednn", _FAST, error, f"oneDNN fp32 matmul: probed exact (max relative error "
                                                f"{error:.1e} against {_name(reference)})")
    return _Choice("mkl", _EXACT, error, f"MKL fp32: oneDNN's route is not fp32 on this CPU (relative error "
                                         f"{error:.1e} against {_name(reference)}, over {TOLERANCE:.0e})")


def probe(k: int, n: int, rows: int, *, setting: str = _FAST, reference: torch.dtype = torch.float64) -> float:
    """Max |y - y_ref| / max |y_ref| of fp32 `F.linear` under oneDNN's fp32
    `setting`, at `rows`×`k` inputs and an `n`×`k` weight, `y_ref` computed in
    `reference`. Inputs are deterministic (their own generator), not the
    caller's random stream."""
    gen = torch.Generator().manual_seed(rows * 7919 + k * 31 + n)
    x = torch.randn(rows, k, generator=gen)
    w = torch.randn(n, k, generator=gen) / k ** 0.5
    with torch.no_grad(), pinned(setting):
        y = F.linear(x, w)
    ref = (x.to(reference) @ w.to(reference).T).double()
    return float((y.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


class pinned:
    """`with pinned("ieee"):` oneDNN's fp32 matmul precision for the block,
    whatever was there put back after (also on an exception)."""

    def __init__(self, setting: str):
        self.setting = setting

    def __enter__(self):
        self.saved = torch.backends.mkldnn.matmul.fp32_precision
        torch.backends.mkldnn.matmul.fp32_precision = self.setting

    def __exit__(self, *exc):
        torch.backends.mkldnn.matmul.fp32_precision = self.saved
        return False


class _Pin:
    """A forward pre-hook (and, by `restore`, its forward hook) that holds the
    chosen setting for one module's forward. A stack, per thread, because the
    body's forward may run inside the whole model's (and the head's after it)."""

    def __init__(self, shapes: tuple, reference: torch.dtype, precision: str | None):
        self.shapes, self.reference, self.precision = shapes, reference, precision
        self._local = threading.local()

    def __call__(self, module, args):
        if self.precision is not None:
            stack = self._stack()
            stack.append(torch.backends.mkldnn.matmul.fp32_precision)
            torch.backends.mkldnn.matmul.fp32_precision = self.precision
            stack.append(True)
        else:
            self._stack().append(False)

    def restore(self, module, args, output):
        stack = self._stack()
        if stack and stack.pop():
            torch.backends.mkldnn.matmul.fp32_precision = stack.pop()

    def _stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def __getstate__(self):
        # What was asked, not what this CPU answered: the unpickling process probes its own.
        return {"shapes": self.shapes, "reference": self.reference, "requested": self.precision is not None}

    def __setstate__(self, state):
        self.shapes, self.reference = state["shapes"], state["reference"]
        self.precision = _choose(self.shapes, self.reference).setting if state["requested"] else None
        self._local = threading.local()


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


__all__ = ["KERNELS", "Kernels", "TOLERANCE", "pinned", "prepare", "probe"]
