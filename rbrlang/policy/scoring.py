"""The reward a compiled policy gives one response type's features.

    fitted (weights.json):  reward = features · w + bias            (+ rm_score)
    not fitted:             reward = Σ_c P(class c) · score(c)      (+ rm_score)

The unfitted reward is the expected class score: a policy is usable before any
fit, and its rewards are ordered by class (a completion surely in a better class
scores higher). Class scores are `ResponseType.scores`: each class row's
`"score"` in `policy.json` (the author's value from the `.rbr`), checked when
the policy loads; in a document from before class scores, evenly spaced from
1.0 (best class, in class order) to 0.0 (worst). The class probabilities
are the last C columns of the features, in class order (schema order: the
response type's propositions, then its classes), so no grading is redone here.

`CompiledPolicy.reward` delegates here; the math lives apart from loading.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..errors import PolicyError

if TYPE_CHECKING:
    from .compiled import CompiledPolicy, ResponseType


def default_scores(n: int) -> tuple[float, ...]:
    """Evenly spaced from 1.0 (best) to 0.0 (worst); a single class scores 1.0."""
    if n == 1:
        return (1.0,)
    return tuple(1.0 - i / (n - 1) for i in range(n))


def fitted_weights(policy: "CompiledPolicy", rt: "ResponseType") -> Optional[Any]:
    """The FittedWeights for a response type, or None before `rbrc fit`."""
    fw = policy.weights.get(rt.name)
    if fw is None:
        return None
    # load_policy checks the schema hash; checked again here because weights can
    # also be attached to a policy by hand (and a mismatch would be silent).
    if tuple(fw.features) != tuple(rt.features) or len(fw.weights) != len(rt.features):
        raise PolicyError(f"response type `{rt.name}`: fitted weights are for features {list(fw.features)}, "
                          f"but the policy's features are {list(rt.features)}; refit (`rbrc fit`)")
    return fw


def reward(policy: "CompiledPolicy", response_type: str, features, rm_score=None):
    """`[N]` rewards for `[N, F]` features (schema order, as `policy.features` gives them).

    Args:
        policy: the compiled policy.
        response_type: the response type the features belong to.
        features: `[N, F]` tensor or array, F = len(response type's features).
        rm_score: optional `[N]` finite reward model scores, added to the reward.

    Returns:
        A float tensor `[N]` on the features' device (float64 unless the
        features are already a floating dtype, which is kept).
    """
    import torch

    rt = policy.response_type(response_type)
    feats = _as_matrix(features, rt)
    fw = fitted_weights(policy, rt)
    if fw is not None:
        w = torch.as_tensor(fw.weights, dtype=feats.dtype, device=feats.device)
        out = feats @ w + float(fw.bias)
    else:
        c = len(rt.classes)
        scores = torch.as_tensor(rt.scores, dtype=feats.dtype, device=feats.device)
        out = feats[:, -c:] @ scores
    if rm_score is not None:
        out = out + _as_vector(rm_score, feats.shape[0], feats)
    return out


def _as_matrix(features, rt: "ResponseType"):
    import torch

    try:
        feats = torch.as_tensor(features)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PolicyError(f"features must be a [N, {len(rt.features)}] numeric tensor or array ({exc})") from None
    if not (feats.is_floating_point() or feats.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8)):
        raise PolicyError(f"features must be real numbers, not {feats.dtype}")
    if not feats.is_floating_point():
        feats = feats.to(torch.float64)
    f = len(rt.features)
    if feats.dim() != 2 or feats.shape[1] != f:
        raise PolicyError(f"response type `{rt.name}` has {f} features; expected features of shape [N, {f}] "
                          f"(as `policy.features` returns them), got {list(feats.shape)}")
    if not bool(torch.isfinite(feats).all()):
        rows = torch.nonzero(~torch.isfinite(feats).all(dim=1)).flatten().tolist()
        raise PolicyError(f"features are not finite in row{'s' * (len(rows) > 1)} {_some(rows)}")
    return feats


def _as_vector(values, n: int, like):
    import torch

    try:
        vec = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PolicyError(f"rm_score must be [{n}] numbers ({exc})") from None
    if vec.dim() != 1 or vec.shape[0] != n:
        raise PolicyError(f"rm_score must have shape [{n}] (one score per feature row), got {list(vec.shape)}")
    if not bool(torch.isfinite(vec).all()):
        rows = torch.nonzero(~torch.isfinite(vec)).flatten().tolist()
        raise PolicyError(f"rm_score is not finite at item{'s' * (len(rows) > 1)} {_some(rows)}")
    return vec


def _some(items: list, k: int = 5) -> str:
    shown = ", ".join(map(str, items[:k]))
    return shown + (f" (and {len(items) - k} more)" if len(items) > k else "")
