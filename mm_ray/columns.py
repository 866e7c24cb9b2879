"""Column names shared by the reader, the preprocessors and the consumers of the stream.

A batch is a ``dict[str, numpy.ndarray]`` (Ray Data's ``batch_format="numpy"``). The reader
emits the raw columns; each preprocessor consumes its modality's raw column and adds the
model-ready one; the stage that consumed a raw column drops it so later stages move less data.

Raw columns (reader output)        Model-ready columns (preprocessor output)
-------------------------------    ------------------------------------------------------------
KEY, SHARD      str                 (kept)
IMAGE_BYTES     bytes | None        IMAGE           uint8   [3, H, W]
TEXT_BYTES      bytes | None        INPUT_IDS       int32   [L]; ATTENTION_MASK int8 [L]
AUDIO_BYTES     bytes | None        AUDIO           float32 [n_mels, frames] (log-mel)
LABEL           int64               (kept)
HAS_IMAGE, HAS_TEXT, HAS_AUDIO  bool presence mask: False when the sample had no member of
                                    that modality (the model-ready column is then all zeros).

A preprocessor never raises on one bad sample: it writes a reason code (a ``Reason`` value)
into REJECT for that row ("" means the row is fine) and a human-readable REJECT_DETAIL.
The Ray stage wrapping it moves rejected rows to the quarantine ledger.
"""

import itertools

KEY = "__key__"
SHARD = "__shard__"

IMAGE_BYTES = "image_bytes"
TEXT_BYTES = "text_bytes"
AUDIO_BYTES = "audio_bytes"

IMAGE = "image"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
AUDIO = "audio"
LABEL = "label"

HAS_IMAGE = "has_image"
HAS_TEXT = "has_text"
HAS_AUDIO = "has_audio"

REJECT = "__reject__"
REJECT_DETAIL = "__reject_detail__"

MODALITIES = ("image", "text", "audio")
RAW_COLUMN = {"image": IMAGE_BYTES, "text": TEXT_BYTES, "audio": AUDIO_BYTES}
PRESENCE_COLUMN = {"image": HAS_IMAGE, "text": HAS_TEXT, "audio": HAS_AUDIO}

SUBSET_ORDER = ("image", "audio", "text")
"""Order of modality names inside a modality-subset key such as ``"image+audio+text"``: the demo manifest's
caps and the per-subset validation metrics use the same keys."""

SUBSETS = tuple("+".join(c) for r in (1, 2, 3) for c in itertools.combinations(SUBSET_ORDER, r))
"""Every non-empty modality subset's key, singles first: image, audio, text, image+audio, ..., image+audio+text."""
