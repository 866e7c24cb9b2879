"""Render a topic symbol as a short English caption (``.txt`` or ``.json``).

A caption is a template with filler words around one synonym of the topic word, e.g. "a blurry photo taken near
the coast at dusk". The synonym sets are disjoint and no template or filler mentions a colour, a shape or a
sound, so the topic word is the caption's only cue and never ambiguous.

Usage::

    data = render_text(rng, topic=0, container="json")  # b'{"caption": "...", "source": "synthetic"}'
"""

from __future__ import annotations

import json

import numpy as np

TOPIC_WORDS = (
    ("ocean", "sea", "coast", "seaside"),
    ("forest", "woods", "woodland", "jungle"),
    ("city", "downtown", "metropolis", "high street"),
    ("desert", "dunes", "badlands", "sahara"),
    ("mountains", "peaks", "summit", "highlands"),
    ("glacier", "snowfield", "tundra", "ice sheet"),
    ("farm", "farmland", "ranch", "barnyard"),
    ("market", "bazaar", "marketplace", "flea market"),
)
"""Synonyms of each topic symbol; a caption uses one of them."""

TEMPLATES = (
    "a blurry photo taken near the {w} {when}",
    "snapshot from the {w}, slightly out of focus",
    "my friend sent me this picture of the {w} {when}",
    "the {w} {when}",
    "an old postcard showing the {w}",
    "somewhere in the {w}, taken with a cheap camera {when}",
    "we stopped by the {w} {when} and took this",
    "view of the {w}",
    "{when}, near the {w}",
    "another shot of the {w} from our trip",
)
WHEN = (
    "at dusk",
    "at dawn",
    "at noon",
    "last summer",
    "in winter",
    "on a cloudy day",
    "after the rain",
    "early in the morning",
    "late at night",
    "during the holidays",
)
JSON_SOURCE = "synthetic"


def caption(rng: np.random.Generator, topic: int) -> str:
    """One caption for ``topic``: random template, synonym and filler; sometimes capitalised or with a full stop."""
    words = TOPIC_WORDS[topic]
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(
        w=words[rng.integers(len(words))], when=WHEN[rng.integers(len(WHEN))]
    )
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += "."
    return text


def render_text(rng: np.random.Generator, *, topic: int, container: str = "txt") -> bytes:
    """UTF-8 caption (``"txt"``) or ``{"caption": ..., "source": "synthetic"}`` (``"json"``)."""
    text = caption(rng, topic)
    if container == "txt":
        return text.encode("utf-8")
    if container == "json":
        return json.dumps({"caption": text, "source": JSON_SOURCE}).encode("utf-8")
    raise ValueError(f"container must be 'txt' or 'json', got {container!r}")
