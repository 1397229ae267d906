"""The promotion gate: a pure decision, so its rules are unit-testable without MLflow."""

from __future__ import annotations

from dataclasses import dataclass

from training.evaluate import LOWER_IS_BETTER


@dataclass(frozen=True)
class Decision:
    """Whether the candidate becomes champion, and a sentence saying why."""

    promote: bool
    reason: str


def _beats(candidate: float, other: float, metric: str, min_delta: float) -> bool:
    if metric in LOWER_IS_BETTER:
        return candidate < other - min_delta
    return candidate > other + min_delta


def decide(
    candidate: dict[str, float],
    baselines: dict[str, dict[str, float]],
    champion: dict[str, float] | None,
    metric: str,
    min_delta: float = 0.0,
) -> Decision:
    """Promote only if the candidate strictly beats every baseline and the champion on ``metric``.

    All scores must come from the same test window. A tie with the champion keeps the
    champion: replacing a model needs evidence, not equality. ``champion`` is None when
    there is no champion yet; then beating the baselines is enough.
    """
    if not baselines:
        raise ValueError("the gate needs at least one baseline")
    value = candidate[metric]
    for name, scores in sorted(baselines.items()):
        if not _beats(value, scores[metric], metric, min_delta):
            return Decision(False, f"{metric} {value:.4f} does not beat baseline {name} ({scores[metric]:.4f})")
    if champion is None:
        return Decision(True, f"first champion: {metric} {value:.4f} beats every baseline")
    if not _beats(value, champion[metric], metric, min_delta):
        return Decision(
            False, f"{metric} {value:.4f} does not beat the champion ({champion[metric]:.4f}) on this test window"
        )
    return Decision(True, f"{metric} {value:.4f} beats the champion ({champion[metric]:.4f}) and every baseline")
