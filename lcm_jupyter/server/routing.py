"""Model routing on the request path: each key's mode and rules, gated by users' feedback.

A thin shell over `core.routing.decide`: it supplies the price table in force and
the quality board, which is loaded from the rated calls at start and updated by
every feedback post, so a pair that users judge badly stops being used by auto
routing at once, and comes back when its score recovers.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core.quality import QualityBoard
from ..core.routing import DEFAULT_MIN_CONFIDENCE, RoutingDecision, decide, judge
from ..store import feedback as feedback_table
from ..store.keys import KeyRecord
from ..store.store import Store
from .pricing import PricingService


class Router:
    """Decides, per call, whether and where to route."""

    def __init__(
        self,
        *,
        pricing: PricingService,
        store: Store,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        short_prompt_tokens: int = 500,
        quality_threshold: float = 0.6,
        quality_min_ratings: int = 20,
    ) -> None:
        self._pricing = pricing
        self._store = store
        self.min_confidence = min_confidence
        self.short_prompt_tokens = short_prompt_tokens
        self.board = QualityBoard(threshold=quality_threshold, min_ratings=quality_min_ratings)

    def family(self, model: str | None) -> str | None:
        """The price-table family of a model as sent (what quality scores are kept by)."""
        if not model:
            return None
        price = self._pricing.table.resolve(model)
        return price.model if price is not None else model

    async def load(self) -> None:
        """Rebuild the quality board from the rated routed calls in the log."""
        rows = await self._store.run(feedback_table.routed_ratings)
        self.board.load((self.family(f) or f, t, i, s) for f, t, i, s in rows)

    def decide(
        self,
        key: KeyRecord,
        model: str | None,
        wire: str | None,
        body: Mapping | None,
        path: str,
    ) -> RoutingDecision:
        """The routing decision for one call."""
        return decide(
            mode=key.routing_mode,
            model=model,
            wire=wire,
            body=body,
            path=path,
            rules=key.routing_rules,
            prices=self._pricing.table,
            min_confidence=self.min_confidence,
            short_prompt_tokens=self.short_prompt_tokens,
            gate=self.board.gate,
        )

    def shadow(
        self, key: KeyRecord, model: str | None, wire: str | None, body: Mapping | None, path: str
    ) -> RoutingDecision:
        """What auto routing would have done with a call made with routing off."""
        return decide(
            mode="auto",
            model=model,
            wire=wire,
            body=body,
            path=path,
            rules=(),
            prices=self._pricing.table,
            min_confidence=self.min_confidence,
            short_prompt_tokens=self.short_prompt_tokens,
            gate=self.board.gate,
            classify=_unlabelled,
        )

    def rated(self, decision: Mapping | None, score: int, previous: int | None) -> None:
        """Count a rating of a logged call in the board, if the call was routed."""
        if not decision or not decision.get("was_routed"):
            return
        source, target = decision.get("from_model"), decision.get("to_model")
        if not isinstance(source, str) or not isinstance(target, str):
            return  # a row written by hand or by an older version: nothing to count
        self.board.record(
            self.family(source) or source,
            target,
            decision.get("intent"),
            score,
            previous=previous,
        )


def _unlabelled(body: Mapping | None):
    """The verdict without the intent label: a shadow decision is logged, never shown by intent."""
    return judge(body, label=False)
