"""A user's lifecycle: the :class:`Phase` a stored state is in, decided here and nowhere else.

The first row whose condition the state meets is its phase:

==============  ===========================================  ==================================
phase           the stored state                             its next reading
==============  ===========================================  ==================================
NEW             no filter yet (``kalman`` is None)            starts one: an initial reset
NEEDS_RECOVERY  readings rejected since the last accepted     is checked for a streak: with the
                one (``rejected``): the filter is in doubt    rejected ones, readings that agree
                                                              restart the filter (a hard reset)
ADAPTING        a filter a reset restarted, its boost on      an ordinary step, a looser gate
TRACKING        an established filter                         an ordinary step
==============  ===========================================  ==================================

Transitions
-----------
* any phase → ADAPTING: a reset (:func:`weightstream.resets.sequence.run_reset`, or a state
  recovered after a failed one, :func:`weightstream.step.adopt`);
* ADAPTING → TRACKING: the adaptation ends
  (:meth:`~weightstream.resets.manager.ResetManager.advance` says when);
* ADAPTING or TRACKING → NEEDS_RECOVERY: a rejected reading;
* NEEDS_RECOVERY → ADAPTING or TRACKING: an accepted reading (the rejections are dropped);
* any phase → NEW: a corrupt state with nothing to rebuild it from is quarantined
  (:func:`weightstream.repair.repair_user`).

The manager's triggers (:meth:`~weightstream.resets.manager.ResetManager.decide`) apply in
every phase but NEW: a long gap gives a hard reset, a manual entry far from the prediction a
soft one. A filter with no accepted reading (only a corrupt stored row gives one) starts over
as a NEW user does.

The adaptation boost (``AdaptationState.is_adapting``) belongs to the noise model, not to the
lifecycle: a user in NEEDS_RECOVERY keeps the boost of the reset before it, and its process
noise and gate follow the boost
(:meth:`~weightstream.resets.manager.ResetManager.process_noise`).

The file engine's compiled loop keeps the same facts as numbers (:mod:`weightstream.engine.state`)
and runs only ordinary steps, which follow the rules above; every other reading goes through
:mod:`weightstream.step`.
"""

from __future__ import annotations

from enum import StrEnum

from weightstream.model import UserState

__all__ = ["Phase", "phase_of"]


class Phase(StrEnum):
    """Where a user is in their lifecycle (see the module's table)."""

    NEW = "new"
    NEEDS_RECOVERY = "needs_recovery"
    ADAPTING = "adapting"
    TRACKING = "tracking"


def phase_of(state: UserState) -> Phase:
    """The :class:`Phase` of ``state``: the one place it is decided.

    >>> phase_of(UserState("u1"))
    <Phase.NEW: 'new'>
    """
    if state.kalman is None:
        return Phase.NEW
    if state.rejected:
        return Phase.NEEDS_RECOVERY
    if state.adaptation.is_adapting:
        return Phase.ADAPTING
    return Phase.TRACKING
