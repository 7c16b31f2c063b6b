"""User-facing errors. Each carries a message a user can act on; the server maps them to HTTP."""

from __future__ import annotations


class MaasError(Exception):
    """Base class for errors meant for the user, not for a traceback."""

    kind = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(MaasError):
    """The request is well-formed JSON but asks for something impossible (400)."""

    kind = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    """Prompt plus requested tokens do not fit the model's context (400)."""

    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFoundError(MaasError):
    """No model is known under the given name (404)."""

    kind = "not_found_error"

    def __init__(self, message: str, *, param: str | None = "model"):
        super().__init__(message, param=param, code="model_not_found")


class ModelFormatError(MaasError):
    """A model file is corrupt, truncated or of an unsupported kind."""

    kind = "model_format_error"


class UnsupportedModelError(ModelFormatError):
    """The file is readable but its architecture or tensor type is not supported."""


class EngineDeadError(MaasError):
    """The engine loop stopped and cannot serve requests (503)."""

    kind = "service_unavailable"


class PayloadTooLargeError(InvalidRequestError):
    """The request body is over the server's size limit (413)."""

    def __init__(self, message: str):
        super().__init__(message, code="payload_too_large")


class OverloadedError(MaasError):
    """The server is at capacity (429/503)."""

    kind = "overloaded"


class RequestTimeoutError(MaasError):
    """The request ran past the server's per-request timeout (504)."""

    kind = "timeout"
