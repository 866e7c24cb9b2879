"""Column names shared by the reader, the preprocessors and the consumers of the stream.

A batch is a ``dict[str, numpy.ndarray]`` (Ray Data's ``batch_format="numpy"``). The reader emits the raw
columns; each modality's preprocessor consumes its raw column and adds its model-ready ones; the stage that
consumed a raw column drops it so later stages move less data.

Columns every row has::

    KEY, SHARD      str     the sample's key and the shard it came from
    LABEL           int64   the class id (-1 when absent and not required)

and, per modality ``m`` of the run (``mm_ray.modalities``: ``ModalitySpec.raw_column`` / ``presence_column`` /
``columns``)::

    m_bytes         bytes | None   the member's bytes (reader output, consumed by m's preprocessor)
    has_m           bool           presence: False when the sample had no member of m (its columns are zeros)
    m's model-ready columns        e.g. image uint8 [3, H, W]; input_ids int32 [L] + attention_mask int8 [L];
                                   audio float32 [n_mels, frames]; features float32 [...]

A preprocessor never raises on one bad sample: it writes a reason code into REJECT for that row ("" means the
row is fine) and a human-readable REJECT_DETAIL. The Ray stage wrapping it moves rejected rows to the
quarantine ledger.
"""

KEY = "__key__"
SHARD = "__shard__"
LABEL = "label"

REJECT = "__reject__"
REJECT_DETAIL = "__reject_detail__"
