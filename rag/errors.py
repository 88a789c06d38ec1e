"""One family for the library's errors, and the one table that says how the page, the CLI and the API report each."""

from __future__ import annotations

from dataclasses import dataclass


class RagError(Exception):
    """The base of every error the library raises on purpose; `kind` decides how it is reported (`outcome`).

    >>> issubclass(rag.BadInput, rag.RagError), rag.RagError.kind
    (True, 'failure')
    """

    kind = "failure"


class BadInput(RagError):
    """The request cannot be served as asked (an empty question, a bad argument, setting or file); nothing was
    changed. Its message names what is wrong.

    >>> try:
    ...     rag.answer("   ")
    ... except rag.BadInput as error:
    ...     print(error)
    the question is empty
    """

    kind = "bad_input"


class NotFound(BadInput):
    """The request names something that does not exist (an article, a model).

    >>> try:
    ...     rag.Collection("corpus").remove("no-such-article.txt")
    ... except rag.NotFound as error:
    ...     print(error)
    no-such-article.txt: no such article in the index; nothing was deleted
    """

    kind = "not_found"


class TooLarge(BadInput):
    """The request is larger than a configured limit (an upload over `max_upload_mb`, answered 413 by the API;
    `Collection.add` lists such a file in `report.rejected` instead).

    >>> issubclass(rag.TooLarge, rag.BadInput), rag.TooLarge.kind
    (True, 'too_large')
    """

    kind = "too_large"


class Unauthorized(RagError):
    """A request without a valid key (the API's `Authorization: Bearer KEY`)."""

    kind = "unauthorized"


class Busy(RagError):
    """Every place in the queue is taken; the same request may be sent again later."""

    kind = "busy"


class Unavailable(RagError):
    """A service the answer needs is not ready or cannot be reached (models loading, a generator server down)."""

    kind = "unavailable"


class Failure(RagError):
    """Something the setup must fix failed (a model cannot be loaded, the index cannot be read or written)."""

    kind = "failure"


@dataclass(frozen=True)
class Outcome:
    """How a front end reports an error: HTTP status and OpenAI error type (API), exit code (CLI), and whether its
    message is shown as it is (the page shows other errors as "something went wrong" and logs the traceback)."""

    status: int
    error_type: str
    exit_code: int
    expected: bool = True


BAD_INPUT_EXIT = 2
FAILURE_EXIT = 1
OUTCOMES = {
    "bad_input": Outcome(400, "invalid_request_error", BAD_INPUT_EXIT),
    "not_found": Outcome(404, "not_found_error", BAD_INPUT_EXIT),
    "too_large": Outcome(413, "invalid_request_error", BAD_INPUT_EXIT),
    "unauthorized": Outcome(401, "authentication_error", BAD_INPUT_EXIT),
    "busy": Outcome(429, "rate_limit_error", FAILURE_EXIT),
    "unavailable": Outcome(503, "service_unavailable", FAILURE_EXIT),
    "failure": Outcome(500, "server_error", FAILURE_EXIT),
}
UNEXPECTED = Outcome(500, "server_error", FAILURE_EXIT, expected=False)
# Errors whose message is meant for the user: the library's own, and the operating system's (a full disk, a file
# that cannot be read), which name the file and the reason.
EXPECTED = (RagError, OSError)


def outcome(exc: BaseException) -> Outcome:
    """The one mapping from an exception to its HTTP status, OpenAI error type and CLI exit code."""
    if isinstance(exc, RagError):
        return OUTCOMES[exc.kind]
    if isinstance(exc, OSError):
        return OUTCOMES["failure"]
    return UNEXPECTED


def kind_of(exc: BaseException) -> str:
    """The error's kind ("bad_input", "not_found", …), or "unexpected" for a bug; the API's error `code`."""
    return exc.kind if isinstance(exc, RagError) else "failure" if isinstance(exc, OSError) else "unexpected"


__all__ = ["EXPECTED", "OUTCOMES", "BadInput", "Busy", "Failure", "NotFound", "Outcome", "RagError", "TooLarge",
           "Unauthorized", "Unavailable", "kind_of", "outcome"]
