"""Small pieces the pages' form handlers share: a form's values as the API's body model, the
signed-in caller, and the redirect after a POST (303, optionally with a notice in the query)."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError

from allmicro_data.access import Caller
from allmicro_data.errors import Invalid, Unauthorised

M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], **fields: Any) -> M:
    """A request body built from a form, its validation errors as the API's 422 (a page, not
    a 500)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Invalid(f"{where}: {first['msg']}" if where else first["msg"]) from None


def signed_in(caller: Caller | None) -> Caller:
    """The caller; none is sent to sign in (the pages' html_errors answers Unauthorised so)."""
    if caller is None:
        raise Unauthorised("sign in first")
    return caller


def see_other(path: str, query: dict[str, str] | None = None) -> RedirectResponse:
    """The page to show after a form: path, with query (e.g. a notice, done=...) added."""
    if query is not None:
        separator = "&" if "?" in path else "?"
        path = f"{path}{separator}{urlencode(query)}"
    return RedirectResponse(path, status_code=303)
