"""What can go wrong, as types.

Every failure the SDK reports is a :class:`WritError`; the subclasses say
what happened, with the facts writ gave (the deciding policies and the
policy-set version of a denial, the approval a request waits for, how a task
ended). Nothing is reported as a bare string or status code.
"""

from __future__ import annotations

from typing import Any


class WritError(Exception):
    """Anything writ refused, or could not be reached for.

    ``status`` is the HTTP status (``None`` when there was no answer),
    ``code`` the OAuth error code or the problem's title, ``detail`` what
    writ said.
    """

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code


class Denied(WritError):
    """Policy refused the request.

    ``determining_policies`` are the ids of the policies that decided,
    ``policy_version`` the policy set's version (a content hash) when writ
    sent it.
    """

    def __init__(
        self,
        detail: str,
        *,
        determining_policies: list[str] | None = None,
        policy_version: str | None = None,
        status: int | None = 403,
        code: str | None = None,
    ) -> None:
        super().__init__(detail, status=status, code=code)
        self.determining_policies = list(determining_policies or [])
        self.policy_version = policy_version


class PendingApproval(WritError):
    """A person must approve first: a task start (``task_id`` set) or one
    call through a gateway (``task_id`` may be ``None``).

    For a task start, ``wait(timeout)`` (or ``await wait(timeout)`` from an
    :class:`~writ_sdk.AsyncClient`) waits for the decision and returns the
    task once approved; it raises :class:`Denied` when it is denied and this
    error again (``timed_out`` set) when the time runs out.
    """

    def __init__(
        self,
        detail: str,
        *,
        approval_id: str | None,
        task_id: str | None = None,
        timed_out: bool = False,
        waiter: Any = None,
    ) -> None:
        super().__init__(detail, status=202 if task_id else 403, code="approval_required")
        self.approval_id = approval_id
        self.task_id = task_id
        self.timed_out = timed_out
        self._waiter = waiter

    def wait(self, timeout: float | None = None) -> Any:
        if self._waiter is None:
            raise WritError("this approval cannot be waited for here: retry the call once it is approved")
        return self._waiter(timeout)


class Quarantined(WritError):
    """The agent is quarantined: every grant it held is revoked and nothing
    new is issued until an operator releases it."""


class TaskEnded(WritError):
    """The task is over (completed, lapsed, revoked, or its approval denied
    or expired): ``status`` names how when writ said, ``reason`` why."""

    def __init__(self, detail: str, *, task_id: str | None = None, task_status: str | None = None,
                 reason: str | None = None, status: int | None = None) -> None:
        super().__init__(detail, status=status, code="task_ended")
        self.task_id = task_id
        self.task_status = task_status
        self.reason = reason


class InvalidScope(WritError):
    """A scope the task does not hold (a token exchange may only narrow)."""


class InvalidTarget(WritError):
    """A tool that is not registered, or that the task holds nothing for."""


class DpopError(WritError):
    """A proof of possession was refused (``invalid_dpop_proof``), or a
    server nonce was still missing after a retry (``use_dpop_nonce``)."""


class AttestationFailed(WritError):
    """The instance could not prove what it is."""
