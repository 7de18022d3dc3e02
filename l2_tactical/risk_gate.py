"""What may leave L2: the liveness gate (bus and L1 heartbeat, L1's account adopted) and L3's budget.

* Liveness: when the bus does not answer or L1's last heartbeat is older than
  ``bus.heartbeat_timeout_seconds`` (or none was seen yet), only reduce-only orders pass
  (:func:`liveness_gate` -> :class:`GateState` with BUS_UNAVAILABLE / STALE_HEARTBEAT);
  on the bus, also until L2 has adopted an account snapshot from L1 (:func:`account_gate`,
  ACCOUNT_NOT_SYNCED: sizing against an empty mirror could double a position L1 holds);
  :func:`gate_alert` announces each change.
* L3: the :class:`StrategicBudget` holds the latest StrategicDecision (older ones are ignored,
  an expired one no longer applies). Symbols outside its universe get no entries, and gross
  exposure is capped at ``min(risk.exposure_limit, decision.target_exposure)``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from l2_tactical.messages import AlertSeverity, ReasonCode, RiskAlert, StrategicDecision


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GateState:
    """Liveness gate: ``ok`` False means only reduce-only orders may leave L2, because of ``reason``."""

    ok: bool
    reason: ReasonCode = ReasonCode.OK


def liveness_gate(bus_ok: bool, l1_heartbeat_age_s: float | None, timeout_s: float) -> GateState:
    """The gate for a bus that does (not) answer and L1's last heartbeat ``l1_heartbeat_age_s`` seconds
    ago (``None``: none seen yet = stale).

    >>> liveness_gate(True, 1.0, 15.0).ok, liveness_gate(True, None, 15.0).reason.value
    (True, 'stale_heartbeat')
    """
    if not bus_ok:
        return GateState(ok=False, reason=ReasonCode.BUS_UNAVAILABLE)
    if l1_heartbeat_age_s is None or not l1_heartbeat_age_s <= timeout_s:
        return GateState(ok=False, reason=ReasonCode.STALE_HEARTBEAT)
    return GateState(ok=True)


def account_gate(liveness: GateState, synced: bool) -> GateState:
    """The liveness gate, closed too (ACCOUNT_NOT_SYNCED) while L2's account is not yet L1's; a bus or
    heartbeat reason comes first.

    >>> account_gate(GateState(ok=True), False).reason.value, account_gate(GateState(ok=True), True).ok
    ('account_not_synced', True)
    """
    if liveness.ok and not synced:
        return GateState(ok=False, reason=ReasonCode.ACCOUNT_NOT_SYNCED)
    return liveness


def gate_alert(previous: GateState, current: GateState, now: datetime) -> RiskAlert | None:
    """An alert when the gate changed from ``previous`` to ``current``; ``None`` when it did not."""
    if previous == current:
        return None
    if current.ok:
        return RiskAlert(severity=AlertSeverity.INFO, code=previous.reason, timestamp=now,
                         message=f"{previous.reason.value} cleared: new risk allowed again")
    return RiskAlert(severity=AlertSeverity.CRITICAL, code=current.reason, timestamp=now,
                     message=f"{current.reason.value}: no new risk, only reduce-only orders")


class StrategicBudget:
    """The L3 decision in force and what it allows (universe, exposure budget)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.decision: StrategicDecision | None = None
        self._cfg_cache: tuple[float, Any] | None = None

    def adopt(self, decision: StrategicDecision) -> bool:
        """Adopt an L3 decision unless it is older than the current one; True when adopted."""
        if self.decision is not None and decision.timestamp < self.decision.timestamp:
            return False
        self.decision = decision
        return True

    def active(self, now: datetime) -> StrategicDecision | None:
        """The decision in force at ``now`` (``None``: none, or it expired)."""
        d = self.decision
        return None if d is None or (d.expires_at is not None and now >= d.expires_at) else d

    def decision_id(self, now: datetime) -> str:
        d = self.active(now)
        return d.decision_id if d is not None else ""

    def allows_entry(self, symbol: str, now: datetime) -> bool:
        """No L3 decision, or one whose universe holds ``symbol`` with a target exposure above 0."""
        d = self.active(now)
        return d is None or (symbol in d.universe and d.target_exposure > 0)

    def config_at(self, now: datetime) -> Any:
        """The config with L3's exposure budget applied (cached per budget)."""
        d = self.active(now)
        if d is None or d.target_exposure >= self.config.risk.exposure_limit:
            return self.config
        if self._cfg_cache is None or self._cfg_cache[0] != d.target_exposure:
            risk = dataclasses.replace(self.config.risk, exposure_limit=d.target_exposure)
            self._cfg_cache = (d.target_exposure, dataclasses.replace(self.config, risk=risk))
        return self._cfg_cache[1]
