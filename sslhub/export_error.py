"""The one error every step of an ONNX export raises, in words that say what failed and what to do."""

from __future__ import annotations

from sslhub.errors import SSLHubError


class ExportError(SSLHubError):
    """The export or its verification failed; the message says what failed and what to do.

    Attributes:
        details: the exporter's full output (traceback text, logs), for ``--debug``; may be empty.
    """

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details
