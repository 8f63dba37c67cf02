"""How a rank's run ends early: :class:`JobError` (the job failed, for a reason its owner can act
on) and :class:`Interrupted` (a stop signal reached every rank)."""

from __future__ import annotations

__all__ = ["Interrupted", "JobError"]


class JobError(Exception):
    """The job cannot go on; the message is the job's error, written for its owner."""


class Interrupted(Exception):
    """A stop signal reached every rank; the job ends without writing anything half-done."""
