"""Field types that bound what a message may claim; msgspec checks them as it decodes."""

from typing import Annotated

import msgspec

from protocol.limits import (
    MAX_ATTEMPT,
    MAX_DELIVERY,
    MAX_ID_CHARS,
    MAX_KEY_CHARS,
    MAX_LIST_LIMIT,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP,
    NAME_PATTERN,
    TOKEN_PATTERN,
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
"""An id or name in a hot-path message (task messages, reports): bounded, not pattern-checked
(a pattern costs several times the whole decode); code that puts one into a subject checks
it first (``is_token``), and the coordinator applies reports only to runs it knows."""
Token = Annotated[str, msgspec.Meta(pattern=TOKEN_PATTERN)]
"""Run ids, agent ids: one safe subject token of at most MAX_ID_CHARS."""
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
"""Flow, task and queue names."""
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
Attempt = Annotated[int, msgspec.Meta(ge=0, le=MAX_ATTEMPT)]
Delivery = Annotated[int, msgspec.Meta(ge=1, le=MAX_DELIVERY)]
Time = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
FunctionRef = Annotated[str, msgspec.Meta(max_length=1024)]
"""``module:qualname`` of a registered function."""
Key = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]+$", min_length=1,
                                   max_length=MAX_KEY_CHARS)]
"""An idempotency key: 1 to MAX_KEY_CHARS printable characters (an empty key is no key)."""
ListLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)]
MAX_FUNCTIONS = 20_000
"""Most functions one heartbeat may list."""
