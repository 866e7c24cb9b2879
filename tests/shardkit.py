"""Small, real webdataset shards for tests: good samples, and every kind of bad input.

Everything here writes real files with the real encoders (Pillow JPEG/PNG, libsndfile WAV/FLAC,
``tarfile``), small enough that a test builds its data in a fraction of a second::

    from shardkit import good_sample, read_tar_samples, write_bad_input_set, write_samples

    write_samples(tmp_path / "a.tar", {"k0": good_sample(0), "k1": good_sample(1)})
    read_tar_samples(tmp_path / "a.tar")   # {"k0": {"jpg": b"...", "txt": ..., "wav": ..., "cls": b"0"}, ...}

    case = write_bad_input_set(tmp_path / "bad")
    case.specs      # shard specs for the pipeline (a directory plus a brace range with a missing shard)
    case.good       # key -> label of every sample the pipeline must deliver
    case.expected   # {(shard file name, key, reason)} of every record the quarantine log must hold

``read_tar_samples`` groups members with ``tarfile`` alone, so tests can check the pipeline's
reader against an independent reading of the same bytes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from mm_ray.quarantine import Reason

Members = dict[str, bytes]
WORDS = ("red", "bus", "quiet", "river", "small", "dog", "old", "bridge", "green", "field", "loud", "train")


def image_bytes(seed: int, size: tuple[int, int] = (40, 32), fmt: str = "JPEG") -> bytes:
    """A ``size`` (width, height) RGB gradient with noise, encoded as ``fmt`` (JPEG, PNG, ...)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 6 + seed, y * 8, (x + y) * 3], axis=-1) % 256
    pixels = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def audio_bytes(seed: int, seconds: float = 0.25, sample_rate: int = 16000, fmt: str = "WAV") -> bytes:
    """A mono tone (pitch from ``seed``) of ``seconds`` encoded as ``fmt`` (WAV, FLAC); 0 s gives 0 frames."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (0.4 * np.sin(2 * np.pi * (300 + 40 * seed) * t)).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, wave, sample_rate, format=fmt, subtype="PCM_16")
    return out.getvalue()


def caption(seed: int) -> str:
    """A short lower-case English caption; different seeds give different word sequences."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.permutation(len(WORDS))[:5])


def good_sample(seed: int, label: int | None = None) -> Members:
    """A complete sample: ``jpg``, ``txt``, ``wav`` and ``cls`` (label ``seed % 4`` unless given)."""
    return {
        "jpg": image_bytes(seed),
        "txt": caption(seed).encode("utf-8"),
        "wav": audio_bytes(seed),
        "cls": str(seed % 4 if label is None else label).encode("ascii"),
    }


def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar holding exactly these ``(name, data)`` members, in this order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 946684800  # fixed, so the same members give the same bytes
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sample_members(samples: Mapping[str, Mapping[str, bytes]]) -> list[tuple[str, bytes]]:
    """``{key: {ext: data}}`` -> tar members ``("key.ext", data)``, samples kept contiguous."""
    return [(f"{key}.{ext}", data) for key, members in samples.items() for ext, data in members.items()]


def write_tar(path: str | Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """Write ``tar_bytes(members)`` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(members))
    return path


def write_samples(path: str | Path, samples: Mapping[str, Mapping[str, bytes]]) -> Path:
    """Write a shard holding ``samples`` (``{key: {ext: data}}``) in order; returns the path."""
    return write_tar(path, sample_members(samples))


def cut_inside_member(data: bytes, member: str) -> bytes:
    """``data`` (a tar) cut half-way through the bytes of ``member``, as an interrupted upload leaves it."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(member)
    return data[: info.offset_data + info.size // 2]


def read_tar_samples(path: str | Path) -> dict[str, Members]:
    """``{key: {ext: data}}`` of a well-formed shard, grouped with ``tarfile`` only (the test oracle)."""
    samples: dict[str, Members] = {}
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            if info.isfile():
                key, _, ext = info.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return samples


def label_of(members: Mapping[str, bytes]) -> int:
    """The label of a demo or shardkit sample: the ``cls`` member, else the JSON ``label`` field."""
    if "cls" in members:
        return int(members["cls"])
    return int(json.loads(members["json"])["label"])


def caption_of(members: Mapping[str, bytes]) -> str:
    """The caption of a sample: the ``txt`` member, else the JSON ``caption`` field."""
    if "txt" in members:
        return members["txt"].decode("utf-8")
    return json.loads(members["json"])["caption"]


@dataclasses.dataclass
class ShardSet:
    """A directory of shards plus what a correct pipeline must make of them."""

    root: Path
    specs: list[str]
    """Shard specs to hand to the pipeline."""
    good: dict[str, int] = dataclasses.field(default_factory=dict)
    """Key -> label of every sample that must come out."""
    expected: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)
    """(shard file name, key, reason value) of every quarantine record ("" key for shard records)."""

    def keep(self, samples: Mapping[str, Members]) -> None:
        """Record ``samples`` as ones the pipeline must deliver."""
        self.good.update({key: label_of(members) for key, members in samples.items()})

    def expect(self, shard: str, key: str, reason: Reason) -> None:
        """Record a quarantine record the pipeline must log."""
        self.expected.add((shard, key, reason.value))

    @property
    def sample_reasons(self) -> dict[str, int]:
        """Expected ``summary()["quarantine_reasons"]``: sample-level records counted by reason."""
        counts: dict[str, int] = {}
        for _shard, key, reason in self.expected:
            # Shard records have no key; an unknown member is noted but its sample is kept.
            if key and reason != Reason.UNKNOWN_EXTENSION.value:
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def shards_with(self, reason: Reason) -> list[str]:
        """File names of the shards that must be reported with the shard-level ``reason``."""
        return sorted(shard for shard, key, r in self.expected if not key and r == reason.value)


# Samples that are each broken in exactly one way, and the reason the pipeline must give.
def _bad_samples() -> dict[str, tuple[Members, Reason]]:
    jpeg, png = image_bytes(100), image_bytes(101, fmt="PNG")
    garbage = np.random.default_rng(7).bytes(600)

    def broken(seed: int, **changes: bytes | None) -> Members:
        members = {**good_sample(seed), **changes}
        return {ext: data for ext, data in members.items() if data is not None}

    return {
        "corrupt_jpeg": (broken(20, jpg=b"\xff\xd8" + garbage), Reason.CORRUPT_IMAGE),
        "truncated_jpeg": (broken(21, jpg=jpeg[: len(jpeg) * 2 // 3]), Reason.CORRUPT_IMAGE),
        "truncated_png": (broken(22, jpg=None, png=png[: len(png) // 2]), Reason.CORRUPT_IMAGE),
        "bad_audio": (broken(23, wav=garbage), Reason.CORRUPT_AUDIO),
        "zero_frame_wav": (broken(24, wav=audio_bytes(24, seconds=0.0)), Reason.EMPTY_AUDIO),
        "zero_byte_flac": (broken(25, wav=None, flac=b""), Reason.EMPTY_AUDIO),
        "latin1_text": (broken(26, txt="café crème".encode("latin-1")), Reason.BAD_TEXT_ENCODING),
        "no_label": (broken(27, cls=None), Reason.MISSING_LABEL),
        "word_label": (broken(28, cls=b"seven"), Reason.BAD_LABEL),
    }


def write_bad_input_set(root: str | Path) -> ShardSet:
    """Write good samples mixed with every kind of bad sample and bad shard into ``root``.

    ``mixed-000000.tar``: good samples interleaved with one sample per bad-sample case, and one
    sample with an extra member of an unknown extension (kept). ``noncontiguous-000000.tar``: a key
    whose members come back after another key. ``truncated-000000.tar``: cut inside a member.
    ``empty-000000.tar`` (0 bytes), ``empty-000001.tar`` (a tar with no members), ``garbage-000000.tar``
    (random bytes), ``hostile-000000.tar`` (a member name that is not UTF-8, a 100 KB caption),
    ``part-000000.tar`` / ``part-000001.tar``, and a brace range ``part-{000000..000002}``
    whose last shard does not exist.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    case = ShardSet(root, [str(root), str(root / "part-{000000..000002}.tar")])
    _write_mixed(case)
    _write_noncontiguous(case)
    _write_truncated(case)
    _write_broken_shards(case)
    _write_hostile(case)
    for index in range(2):
        name = f"part-{index:06d}.tar"
        samples = {f"part{index}_{i}": good_sample(60 + 3 * index + i) for i in range(3)}
        write_samples(root / name, samples)
        case.keep(samples)
    case.expect("part-000002.tar", "", Reason.UNREADABLE_SHARD)
    return case


def _write_mixed(case: ShardSet) -> None:
    name = "mixed-000000.tar"
    good = {f"good{i}": good_sample(i) for i in range(6)}
    good["odd_member"] = {**good_sample(6), "xyz": b"an extension nothing maps"}
    bad = _bad_samples()
    # Interleaved, so every read block and preprocessing batch holds good and bad rows together.
    order = list(good.items())
    for i, (key, (members, _reason)) in enumerate(bad.items()):
        order.insert(2 * i + 1, (key, members))
    write_samples(case.root / name, dict(order))
    case.keep(good)
    case.expect(name, "odd_member", Reason.UNKNOWN_EXTENSION)
    for key, (_members, reason) in bad.items():
        case.expect(name, key, reason)


def _write_noncontiguous(case: ShardSet) -> None:
    name = "noncontiguous-000000.tar"
    first, other = good_sample(40), good_sample(41)
    members = sample_members({"split_key": first, "between": other})
    members.append(("split_key.flac", audio_bytes(42, fmt="FLAC")))  # comes back after "between"
    write_tar(case.root / name, members)
    # The first run of the key is a complete sample and is kept; the late fragment is set aside.
    case.keep({"split_key": first, "between": other})
    case.expect(name, "split_key", Reason.NONCONTIGUOUS_KEY)


def _write_truncated(case: ShardSet) -> None:
    name = "truncated-000000.tar"
    samples = {f"cut{i}": good_sample(50 + i) for i in range(4)}
    data = cut_inside_member(tar_bytes(sample_members(samples)), "cut2.wav")
    (case.root / name).write_bytes(data)
    case.keep({key: samples[key] for key in ("cut0", "cut1")})
    case.expect(name, "cut2", Reason.TRUNCATED_SAMPLE)
    case.expect(name, "", Reason.TRUNCATED_SHARD)


def _write_hostile(case: ShardSet) -> None:
    """A member name with a latin-1 byte (not UTF-8) and a 100 KB caption, between good samples."""
    name = "hostile-000000.tar"
    latin1_key = b"caf\xe9".decode("utf-8", "surrogateescape")  # written back as the raw byte 0xe9
    calm = {"calm0": good_sample(70), "calm1": good_sample(73)}
    samples = {
        "calm0": calm["calm0"],
        latin1_key: good_sample(71),
        "long_caption": {**good_sample(72), "txt": b"word " * 20_000},
        "calm1": calm["calm1"],
    }
    write_samples(case.root / name, samples)
    case.keep(calm)
    case.expect(name, "caf\\xe9", Reason.BAD_MEMBER_NAME)  # the key as logged: the byte escaped
    case.expect(name, "long_caption", Reason.CAPTION_TOO_LONG)


def _write_broken_shards(case: ShardSet) -> None:
    (case.root / "empty-000000.tar").write_bytes(b"")
    write_tar(case.root / "empty-000001.tar", [])
    (case.root / "garbage-000000.tar").write_bytes(np.random.default_rng(8).bytes(4096))
    case.expect("empty-000000.tar", "", Reason.EMPTY_SHARD)
    case.expect("empty-000001.tar", "", Reason.EMPTY_SHARD)
    case.expect("garbage-000000.tar", "", Reason.UNREADABLE_SHARD)


# ------------------------------------------------------------------------ the README's "Your own shards"

BIRDS = ("sparrow", "Crow", "blue jay", "owl")
"""String labels of the img2dataset-style layout (mixed case and a space on purpose)."""
SOUNDS = ("dog_bark", "siren", "rain", "door knock")
"""String labels of the audio-caption layout."""


def write_img2dataset_layout(
    root: str | Path, samples: int = 12, *, shards: int = 2, offset: int = 0
) -> dict:
    """img2dataset's output: ``NNNN.jpg`` + ``NNNN.txt`` (caption) + ``NNNN.json`` (its metadata, plus a
    string ``category``); returns ``{key: category}``, the labels as written."""

    def sample(i: int) -> tuple[str, Members, str]:
        key, category = f"{i:09d}", BIRDS[(i * 7) % len(BIRDS)]
        meta = {
            "url": f"https://example.com/{i}.jpg",
            "key": key,
            "status": "success",
            "category": category,
            "width": 40,
            "height": 32,
            "caption": caption(i),
        }
        members = {
            "jpg": image_bytes(i),
            "txt": caption(i).encode("utf-8"),
            "json": json.dumps(meta).encode("utf-8"),
        }
        return key, members, category

    return _write_labelled_shards(Path(root), "", samples, shards, offset, sample)


def write_audio_caption_layout(
    root: str | Path, samples: int = 12, *, shards: int = 2, offset: int = 0, labels: tuple[str, ...] = SOUNDS
) -> dict:
    """An audio-caption set: ``NNNN.flac`` + ``NNNN.txt.gz`` (gzipped caption) + ``NNNN.cls`` (a string
    label); returns ``{key: label}`` as written."""
    import gzip

    def sample(i: int) -> tuple[str, Members, str]:
        label = labels[(i * 5) % len(labels)]
        members = {
            "flac": audio_bytes(i, fmt="FLAC"),
            "txt.gz": gzip.compress(f"the sound of {label} {caption(i)}".encode()),
            "cls": f"{label}\n".encode(),
        }
        return f"clip{i:06d}", members, label

    return _write_labelled_shards(Path(root), "audio-", samples, shards, offset, sample)


def _write_labelled_shards(
    root: Path,
    prefix: str,
    samples: int,
    shards: int,
    offset: int,
    sample: Callable[[int], tuple[str, Members, str]],
) -> dict[str, str]:
    """``samples`` samples made by ``sample(i)`` -> (key, members, label), split evenly over ``shards`` tar files
    ``<prefix>NNNNN.tar``; returns ``{key: label}``, the labels as written."""
    truth: dict[str, str] = {}
    per_shard = -(-samples // shards)
    for s in range(shards):
        members: dict[str, Members] = {}
        for i in range(s * per_shard + offset, min((s + 1) * per_shard, samples) + offset):
            key, members[key], truth[key] = sample(i)
        write_samples(root / f"{prefix}{s:05d}.tar", members)
    return truth
