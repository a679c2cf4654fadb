"""The answering policy: for each message, the intent run's reading (intent, its probability, the out-of-scope score)
and the nearest known questions decide between the intent's template, the nearest known answer, and a person.

A message is escalated, in this order, when the customer asks for a person (a phrase or an intent), when it is out
of scope (the run's trained out-of-scope class, or a score above max_ood_score: scope.py), when the two best intents are
within ambiguity_gap, or when neither the intent (min_confidence) nor the nearest question (min_similarity) is
sure enough (low_confidence). A conversation whose last max_failures turns were escalated as well is handed to a
person (repeated_failure). The three thresholds are calibrated on labelled messages: the most in-scope messages
answered while the answered in-scope ones are right at target_accuracy and at least target_oos_recall of the
out-of-scope ones are escalated (the two are measured apart: their mix in calibration need not be production's).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from lmadapt.apps.support.config import DEFAULT_HUMAN_PHRASES, PolicyConfig
from lmadapt.apps.support.knowledge import KnowledgeBase

OUT_OF_SCOPE, LOW_CONFIDENCE, AMBIGUOUS = "out_of_scope", "low_confidence", "ambiguous"
USER_ASKED_FOR_HUMAN, REPEATED_FAILURE = "user_asked_for_human", "repeated_failure"
REASONS = (OUT_OF_SCOPE, LOW_CONFIDENCE, AMBIGUOUS, USER_ASKED_FOR_HUMAN, REPEATED_FAILURE)
HANDOFF_REASONS = (USER_ASKED_FOR_HUMAN, REPEATED_FAILURE)  # the conversation goes to a person
TEMPLATE, RETRIEVAL = "template", "retrieval"
ESCALATION_ANSWERS = {
    OUT_OF_SCOPE: "I can't help with that here; a colleague will pick up your question.",
    LOW_CONFIDENCE: "I'm not sure I understood; a colleague will pick up your question.",
    AMBIGUOUS: "I'm not sure which of two things you mean; a colleague will pick up your question.",
    USER_ASKED_FOR_HUMAN: "I'm handing you over to a person now.",
    REPEATED_FAILURE: "I'm handing you over to a person now.",
}
GRID_POINTS = 24  # candidate values per threshold in calibration (quantiles of the calibration messages)


@dataclass
class Reading:
    """What the models say of one message."""

    intent: str
    confidence: float  # the intent's probability
    margin: float  # its probability minus the second intent's
    ood_score: float | None  # the bot's out-of-scope score (scope.py; None: the run has no detector)
    trained_out_of_scope: bool  # the run predicted its trained out-of-scope class
    neighbours: list[tuple[int, float]]  # (knowledge-base entry, similarity), best first


@dataclass
class Thresholds:
    min_confidence: float
    min_similarity: float
    max_ood_score: float | None
    ambiguity_gap: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Reply:
    answer: str
    intent: str
    confidence: float
    sources: list[dict] = field(default_factory=list)
    escalate: bool = False
    reason: str | None = None
    route: str | None = None  # template or retrieval when answered


def asks_for_human(text: str, intent: str, policy: PolicyConfig) -> bool:
    """The customer asks for a person: one of the policy's phrases, or one of its intents."""
    lowered = " ".join(text.lower().split())
    phrases = policy.human_phrases if policy.human_phrases is not None else DEFAULT_HUMAN_PHRASES
    return any(phrase.lower() in lowered for phrase in phrases) or intent in (policy.human_intents or ())


def sources(reading: Reading, knowledge: KnowledgeBase) -> list[dict]:
    return [
        {
            "question": knowledge.questions[entry],
            "answer": knowledge.answer_of(entry),
            "intent": knowledge.intents[entry],
            "similarity": round(float(similarity), 4),
        }
        for entry, similarity in reading.neighbours
    ]


def escalation_reason(reading: Reading, text: str, thresholds: Thresholds, policy: PolicyConfig) -> str | None:
    """Why the message goes to a person before any answer is tried (None: try to answer)."""
    if asks_for_human(text, reading.intent, policy):
        return USER_ASKED_FOR_HUMAN
    if reading.trained_out_of_scope or (
        thresholds.max_ood_score is not None
        and reading.ood_score is not None
        and reading.ood_score > thresholds.max_ood_score
    ):
        return OUT_OF_SCOPE
    if reading.margin < thresholds.ambiguity_gap:
        return AMBIGUOUS
    return None


def decide(
    reading: Reading,
    text: str,
    knowledge: KnowledgeBase,
    thresholds: Thresholds,
    policy: PolicyConfig,
    recent_failures: int = 0,
) -> Reply:
    """The reply to one message; `recent_failures`: how many of the conversation's last policy.max_failures turns
    were escalated."""
    found = sources(reading, knowledge)
    reply = Reply("", reading.intent, round(reading.confidence, 4), found)
    reason = escalation_reason(reading, text, thresholds, policy)
    if reason is None:
        if reading.confidence >= thresholds.min_confidence and reading.intent in knowledge.templates:
            reply.answer, reply.route = knowledge.templates[reading.intent], TEMPLATE
        elif reading.neighbours and reading.neighbours[0][1] >= thresholds.min_similarity:
            reply.answer, reply.route = found[0]["answer"], RETRIEVAL
        else:
            reason = LOW_CONFIDENCE
    if reason is not None:
        if reason not in HANDOFF_REASONS and policy.max_failures and recent_failures >= policy.max_failures:
            reason = REPEATED_FAILURE
        reply.answer, reply.escalate, reply.reason = ESCALATION_ANSWERS[reason], True, reason
    return reply


@dataclass
class Signals:
    """The readings of labelled messages as arrays, with whether each route would answer them right."""

    confidence: np.ndarray
    margin: np.ndarray
    ood_score: np.ndarray  # -inf where the run has no detector
    trained_out_of_scope: np.ndarray
    similarity: np.ndarray  # of the nearest known question
    has_template: np.ndarray
    template_right: np.ndarray
    retrieval_right: np.ndarray
    out_of_scope: np.ndarray  # the message is out of scope
    asks_for_human: np.ndarray

    @classmethod
    def of(
        cls,
        readings: list[Reading],
        texts: list[str],
        true_intents: list[str | None],
        knowledge: KnowledgeBase,
        policy: PolicyConfig,
    ) -> Signals:
        """`true_intents`: None for an out-of-scope message."""
        nearest = [r.neighbours[0] if r.neighbours else (-1, -np.inf) for r in readings]
        return cls(
            confidence=np.array([r.confidence for r in readings]),
            margin=np.array([r.margin for r in readings]),
            ood_score=np.array([-np.inf if r.ood_score is None else r.ood_score for r in readings]),
            trained_out_of_scope=np.array([r.trained_out_of_scope for r in readings], dtype=bool),
            similarity=np.array([similarity for _, similarity in nearest]),
            has_template=np.array([r.intent in knowledge.templates for r in readings], dtype=bool),
            template_right=np.array([r.intent == t for r, t in zip(readings, true_intents)], dtype=bool),
            retrieval_right=np.array(
                [entry >= 0 and knowledge.intents[entry] == t for (entry, _), t in zip(nearest, true_intents)],
                dtype=bool,
            ),
            out_of_scope=np.array([t is None for t in true_intents], dtype=bool),
            asks_for_human=np.array(
                [asks_for_human(t, r.intent, policy) for t, r in zip(texts, readings)],
                dtype=bool,
            ),
        )

    def outcome(self, thresholds: Thresholds) -> tuple[np.ndarray, np.ndarray]:
        """(answered, answered right) of each message under the thresholds, as `decide` would."""
        max_ood = np.inf if thresholds.max_ood_score is None else thresholds.max_ood_score
        open_ = (
            ~self.asks_for_human
            & ~self.trained_out_of_scope
            & (self.ood_score <= max_ood)
            & (self.margin >= thresholds.ambiguity_gap)
        )
        by_template = open_ & (self.confidence >= thresholds.min_confidence) & self.has_template
        by_retrieval = open_ & ~by_template & (self.similarity >= thresholds.min_similarity)
        answered = by_template | by_retrieval
        right = (by_template & self.template_right) | (by_retrieval & self.retrieval_right)
        return answered, right & ~self.out_of_scope


def figures(signals: Signals, thresholds: Thresholds) -> dict:
    """Containment (share of in-scope messages answered), accuracy among the answered in-scope messages,
    out-of-scope recall (share of out-of-scope messages escalated)."""
    answered, right = signals.outcome(thresholds)
    in_scope = ~signals.out_of_scope
    answered_in_scope = answered & in_scope
    return {
        "containment": float(answered[in_scope].mean()) if in_scope.any() else None,
        "answered_accuracy": float(right.sum() / answered_in_scope.sum()) if answered_in_scope.any() else None,
        "oos_recall": float(1 - answered[signals.out_of_scope].mean()) if signals.out_of_scope.any() else None,
        "answered": int(answered.sum()),
        "messages": len(answered),
    }


def _candidates(values: np.ndarray, extra: tuple[float, ...] = ()) -> np.ndarray:
    finite = values[np.isfinite(values)]
    quantiles = np.quantile(finite, np.linspace(0, 1, GRID_POINTS)) if len(finite) else np.array([])
    return np.unique(np.concatenate([quantiles, np.array(extra, dtype=float)]))


def recall_threshold(out_of_scope_scores: np.ndarray, target: float) -> float:
    """The highest out-of-scope threshold that still escalates `target` of these messages (score above it)."""
    ordered = np.sort(out_of_scope_scores[np.isfinite(out_of_scope_scores)])
    needed = int(np.ceil(target * len(ordered)))
    return float(np.nextafter(ordered[len(ordered) - needed], -np.inf)) if needed else np.inf


def threshold_grid(signals: Signals, policy: PolicyConfig, run_threshold: float | None) -> list[Thresholds]:
    """Every combination of candidate thresholds (fixed ones as the policy sets them)."""
    in_scope = ~signals.out_of_scope
    confidences = (
        [policy.min_confidence]
        if policy.min_confidence is not None
        else _candidates(signals.confidence[in_scope], (1.1,))
    )
    similarities = (
        [policy.min_similarity]
        if policy.min_similarity is not None
        else _candidates(signals.similarity[in_scope], (2.0,))
    )
    has_detector = np.isfinite(signals.ood_score).any()
    if policy.max_ood_score is not None or not has_detector:
        oods = [policy.max_ood_score if has_detector else None]
    elif not signals.out_of_scope.any():
        oods = [run_threshold]  # nothing out of scope to calibrate on: the run's own threshold
    else:  # where in-scope messages start to be escalated, where out-of-scope ones stop, and the target recall's
        outside = signals.ood_score[signals.out_of_scope]
        extra = (np.inf, *((run_threshold,) if run_threshold is not None else ()))
        extra += (recall_threshold(outside, policy.target_oos_recall),) if policy.target_oos_recall else ()
        oods = np.unique(np.concatenate([_candidates(signals.ood_score[in_scope], extra), _candidates(outside)]))
    return [
        Thresholds(float(c), float(s), None if o is None else float(o), policy.ambiguity_gap)
        for c, s, o in itertools.product(confidences, similarities, oods)
    ]


def sweep(signals: Signals, policy: PolicyConfig, run_threshold: float | None) -> list[tuple[Thresholds, dict]]:
    """Every combination of the threshold grid with its figures on the messages (scanned once, for `calibrate` and
    `frontier` alike)."""
    return [(thresholds, figures(signals, thresholds)) for thresholds in threshold_grid(signals, policy, run_threshold)]


def calibrate(points: list[tuple[Thresholds, dict]], policy: PolicyConfig) -> tuple[Thresholds, dict]:
    """Of a sweep's points, the thresholds that answer the most in-scope calibration messages at
    policy.target_accuracy among them, while escalating at least policy.target_oos_recall of the out-of-scope ones;
    where none reaches both, the most accurate of those that reach the recall (else the most accurate). Returns them
    and their figures (with `met`: whether the targets were reached)."""
    best, best_key = None, None
    for thresholds, found in points:
        accuracy = found["answered_accuracy"] or 0.0
        oos_ok = (
            policy.target_oos_recall is None
            or found["oos_recall"] is None
            or found["oos_recall"] >= policy.target_oos_recall
        )
        met = accuracy >= policy.target_accuracy and oos_ok
        key = (
            (met, found["containment"] or 0.0, accuracy)
            if met
            else (met, oos_ok, accuracy, found["containment"] or 0.0)
        )
        if best_key is None or key > best_key:
            best, best_key = (thresholds, found | {"met": met}), key
    return best


def frontier(points: list[tuple[Thresholds, dict]]) -> list[dict]:
    """Containment against answered accuracy over a sweep: the points no other point beats on both."""
    answering = [found | {"thresholds": thresholds.to_json()} for thresholds, found in points if found["answered"]]
    answering.sort(key=lambda p: (-p["containment"], -p["answered_accuracy"]))
    kept, best_accuracy = [], -1.0
    for point in answering:
        if point["answered_accuracy"] > best_accuracy:
            kept.append(point)
            best_accuracy = point["answered_accuracy"]
    return kept
