"""The raw sample: what the tar reader yields before any decoding."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RawSample:
    """All members of one webdataset sample, still as bytes.

    ``members`` maps the member's extension (lower-cased, everything after the first dot
    of the file name, e.g. ``"jpg"``, ``"json"``, ``"seg.png"``) to its bytes. Nothing in
    here has been decoded, and nothing is ever unpickled.
    """

    shard: str
    key: str
    members: dict[str, bytes]
