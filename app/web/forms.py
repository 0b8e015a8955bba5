"""Reading forms: the same pydantic schemas and domain validators as the API.

A form arrives as strings; the route turns it into the API's input schema (so the
rules are the API's), and every error becomes a message next to its field, in the
person's language, with what they typed kept.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from app.core.errors import InvalidInput
from app.web.i18n import _

Model = TypeVar("Model", bound=BaseModel)


async def form_data(request: Request) -> FormData:
    return await request.form()


def text_field(form: FormData, name: str, *, strip: bool = True) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip() if strip else value


def upload_field(form: FormData, name: str) -> UploadFile | None:
    value = form.get(name)
    return value if isinstance(value, UploadFile) else None


def field_messages() -> dict[str, str]:
    """Pydantic's error types in the person's words."""
    return {
        "missing": _("Required."),
        "string_too_short": _("Required."),
        "string_too_long": _("Too long."),
        "float_parsing": _("Enter a number."),
        "float_type": _("Enter a number."),
        "finite_number": _("Enter a number."),
        "model_type": _("Required."),
        "int_parsing": _("Enter a whole number."),
        "greater_than_equal": _("Too small."),
        "less_than_equal": _("Too large."),
        "date_from_datetime_parsing": _("Enter a date as YYYY-MM-DD."),
        "date_parsing": _("Enter a date as YYYY-MM-DD."),
        "literal_error": _("Choose one of the options."),
        "enum": _("Choose one of the options."),
        "uuid_parsing": _("Not a valid id."),
    }


def errors_of(exc: ValidationError, *, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """The first message per form field; ``aliases`` maps a schema path to a form field."""
    messages = field_messages()
    errors: dict[str, str] = {}
    for error in exc.errors():
        path = ".".join(str(part) for part in error.get("loc", ()))
        name = (aliases or {}).get(path, path.split(".")[0] if path else "form")
        if error.get("input", "") is None:
            message = messages["missing"]
        else:
            message = messages.get(error["type"]) or _(
                str(error.get("msg", "")).removeprefix("Value error, ")
            )
        errors.setdefault(name or "form", message)
    return errors


def validate(model: type[Model], data: dict[str, Any], **kwargs: Any) -> Model:
    """The schema's instance, or ``FormErrors`` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FormErrors(errors_of(exc, **kwargs)) from None


class FormErrors(Exception):
    """Messages by field, for the page to show next to each field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors

    @classmethod
    def of(cls, exc: InvalidInput) -> FormErrors:
        return cls({exc.field: _(exc.detail.removeprefix(f"{exc.field}: "))})


def number(form: FormData, name: str) -> float | str | None:
    """A typed number as a float; anything else as typed, for the schema to refuse."""
    raw = text_field(form, name).replace(",", ".")
    if raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        return raw
