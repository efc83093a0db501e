"""Request and response bodies of the HTTP API (pydantic models, which also make the OpenAPI
docs). Ids are the data set's own: integers or strings, as it has them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

Id = StrictInt | StrictStr
EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,32}$"


class EventIn(BaseModel):
    """One interaction. ``timestamp``: Unix seconds or ISO 8601 (default: when it arrives)."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    timestamp: StrictInt | StrictFloat | StrictStr | None = None
    event_type: str = Field("click", pattern=EVENT_TYPE_PATTERN)


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn]


class EventsAck(BaseModel):
    accepted: int
    """Events now durable in the store."""


class RecItem(BaseModel):
    item_id: Id
    score: float
    title: str | None = None


class Recommendations(BaseModel):
    user_id: Id | None = None
    items: list[RecItem]
    history_length: int
    """Items of the history the model read (known ones; the model uses the last ``max_len``)."""
    unknown_items: list[Any] = Field(default_factory=list)
    """History ids the model does not know (listed, never silently dropped)."""
    model_version: str


class HistoryRequest(BaseModel):
    """A caller-kept history, oldest first (stateless: nothing is stored)."""

    model_config = ConfigDict(extra="forbid")
    history: list[Id]
    k: StrictInt = 10
    exclude_seen: bool = True
    user_id: Id | None = None
    """Echoed back; the user's stored history is not used."""


class SimilarItems(BaseModel):
    item_id: Id
    title: str | None = None
    items: list[RecItem]
    """Closest items by cosine similarity of the model's item vectors."""
    model_version: str


class HistoryEvent(BaseModel):
    item_id: Id
    title: str | None = None
    timestamp: float | None = None
    event_type: str | None = None
    source: Literal["artifact", "live"]
    """``artifact``: the training data's events; ``live``: events posted to this service."""


class History(BaseModel):
    user_id: Id
    events: list[HistoryEvent]
    forgotten: bool = False
    """The user was deleted: the artifact's events of them are no longer used."""


class Forgotten(BaseModel):
    user_id: Id
    deleted_events: int
    forgotten: bool = True


class UserRef(BaseModel):
    user_id: Id
    live: bool
    """True for users with live events (most recent first), False for users of the artifact."""


class Users(BaseModel):
    users: list[UserRef]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact: str | None = None
    """A new artifact directory (default: the one being served, read again)."""


class Reloaded(BaseModel):
    version: str
    previous_version: str
    artifact: str
    seconds: float
