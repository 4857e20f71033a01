"""Request shapes of the REST API, validated by pydantic (one layer for every route).

Query strings, path ids and JSON bodies are parsed into these models before a view
uses them; the first problem becomes a 400 ``invalid_<field>`` with pydantic's message.
(Raw JSON has been through ``crowdpower.inputs`` already: no NUL, surrogates or NaN.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
)

MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
CODES = {"starting_after": "invalid_cursor"}  # the API's historical names


class Invalid(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Page(_Query):
    limit: int = Field(20, ge=1, le=100)
    starting_after: Id | None = None


class CustomerQuery(Page):
    email: Annotated[str, Field(max_length=320)] | None = None
    segment: Id | None = None


class AutomationQuery(Page):
    trigger: Annotated[str, Field(max_length=200)] | None = None


class MessageQuery(Page):
    customer_id: Id | None = None
    automation_id: Id | None = None
    state: Literal["queued", "sending", "sent", "failed", "skipped", "outbox"] | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CustomerBody(_Body):
    email: Annotated[StrictStr, Field(max_length=320, pattern=r"@")]
    name: Annotated[StrictStr, Field(max_length=300)] | None = None
    traits: dict[str, Any] | None = None


class EventBody(_Body):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    properties: dict[str, Any] | None = None
    external_id: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    occurred_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(str(value))  # ValueError → a 400
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _code(error: dict) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "json"
    return CODES.get(field, f"invalid_{field}")


def parse(model: type[BaseModel], data: Any):
    """``model`` from ``data`` (a dict of query args or a JSON object), or ``Invalid``."""
    if isinstance(data, dict) and issubclass(model, _Query):  # an empty filter is no filter
        data = {k: v for k, v in data.items() if v not in ("", None) or k == "limit"}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise Invalid(_code(first), f"{where}: {first['msg']}") from None
