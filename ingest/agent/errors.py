"""The upload agent's errors: what stops it, what the server refuses for good, what starts an upload afresh."""

from __future__ import annotations


class AgentError(Exception):
    """The agent cannot go on; the message says why. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Refused(AgentError):
    """The server refuses us for good (credentials, permissions, the dataset): no retry helps."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=3)


class StartAgain(Exception):
    """The server no longer has the upload (expired, failed verification): start a new one."""
