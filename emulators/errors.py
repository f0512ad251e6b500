"""Errors the emulator answers with, in the body shape Azure OpenAI uses.

    EmulatorError                 {"error": {"code", "message", "type"?, "param"?}}
     ├── BadRequest       400     invalid_request_error, names the parameter at fault
     ├── Unauthorized     401     Azure's wording for a missing or wrong key
     ├── DeploymentNotFound 404   Azure's wording for an unknown deployment
     ├── PayloadTooLarge  413     a body or an uploaded file over its limit
     ├── RateLimited      429     Azure's wording, per limit (tokens or requests)
     └── InjectedFault    500/503 a fault the control endpoint asked for

The openai SDK maps these statuses to its exception classes (``BadRequestError``,
``AuthenticationError``, ``NotFoundError``, ``RateLimitError``, ``InternalServerError`` ...), so
code under test sees what it would see against Azure.
"""

from __future__ import annotations


class EmulatorError(Exception):
    status = 500
    code = "InternalServerError"
    error_type: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.error_type:
            error["type"] = self.error_type
        if self.param:
            error["param"] = self.param
        return {"error": error}


class BadRequest(EmulatorError):
    status = 400
    code = "invalid_request_error"
    error_type = "invalid_request_error"


class Unauthorized(EmulatorError):
    status = 401
    code = "401"

    def __init__(self) -> None:
        super().__init__(
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource."
        )


class DeploymentNotFound(EmulatorError):
    status = 404
    code = "DeploymentNotFound"

    def __init__(self, deployment: str) -> None:
        super().__init__(
            f"The API deployment {deployment!r} for this resource does not exist. If you created "
            "the deployment within the last 5 minutes, please wait a moment and try again. "
            "(Emulator: deployments come from EMULATOR_LIMITS_FILE or the APP_*_ENGINE settings.)"
        )


class PayloadTooLarge(EmulatorError):
    status = 413
    code = "request_entity_too_large"
    error_type = "invalid_request_error"


class RateLimited(EmulatorError):
    status = 429
    code = "429"

    def __init__(
        self, operation: str, api_version: str, limit_kind: str, retry_after_s: int
    ) -> None:
        # Azure says "token rate limit" or "call rate limit" depending on the limit hit.
        limit_name = "token rate limit" if limit_kind == "tokens" else "call rate limit"
        super().__init__(
            f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
            f"have exceeded {limit_name} of your current OpenAI S0 pricing tier. Please retry "
            f"after {retry_after_s} seconds. Please go here: https://aka.ms/oai/quotaincrease "
            "if you would like to further increase the default rate limit."
        )


class InjectedFault(EmulatorError):
    def __init__(self, status: int) -> None:
        super().__init__(
            "The server had an error while processing your request. Sorry about that! "
            "(Emulator: injected fault, see /_emulator/config.)"
        )
        self.status = status
        self.code = "InternalServerError" if status == 500 else "ServiceUnavailable"
