"""Errors the command line reports as a message and an exit code, without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class SSLHubError(Exception):
    """An expected failure with a message fit for the user."""

    exit_code = 1


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe: where (``file:line``), which field, and what is wrong."""

    location: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.path}: {self.message}" if self.path else f"{self.location}: {self.message}"


class RecipeError(SSLHubError):
    """A recipe is invalid; carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, issues: list[RecipeIssue]):
        self.issues = issues
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        super().__init__(f"invalid recipe ({count}):\n" + "\n".join(f"  {issue}" for issue in issues))


class ComponentContractError(SSLHubError):
    """A plugin's component returned something its kind's contract does not allow."""


class CheckpointError(SSLHubError):
    """No usable checkpoint, or one could not be written."""


class NonFiniteLossError(SSLHubError):
    """Training produced a NaN or infinite loss or gradient."""

    exit_code = 3


class RunInterrupted(SSLHubError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. Exit code 130 or 143."""

    def __init__(self, signal_name: str, exit_code: int, checkpoint: str):
        self.exit_code = exit_code
        super().__init__(f"{signal_name} received: saved checkpoint {checkpoint}; resume with --resume")


class Terminated(BaseException):
    """SIGTERM arrived outside the training loop (start-up, evaluation, export). Exit code 143.

    Inside the loop a checkpoint is saved first (:class:`RunInterrupted`); elsewhere there is
    nothing to save, so the command stops at once and says so instead of vanishing silently.
    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the way
    (a plugin import, a callback) mistakes it for that code's own failure.
    """

    exit_code = 143

    def __init__(self) -> None:
        super().__init__(
            "SIGTERM received outside the training loop, so nothing was saved now; a run continues from its last "
            "checkpoint with --resume (from the beginning, with the same recipe, when it had none)"
        )
