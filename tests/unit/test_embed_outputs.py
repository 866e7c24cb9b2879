"""``mm-ray embed`` clears its earlier output without following links out of it: a run directory may come from
anywhere, and its ``embeddings/data`` or ``retrieval.json`` may point at someone's files."""

from __future__ import annotations

from pathlib import Path

from mm_ray.retrieval.embed import DATA_DIR, RETRIEVAL_FILE, _clear


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "precious.parquet").write_bytes(b"theirs")
    (victim / "notes.json").write_text("theirs")
    return victim


def test_links_in_the_output_are_removed_never_followed(tmp_path: Path) -> None:
    victim, out = _victim(tmp_path), tmp_path / "run" / "embeddings"
    out.mkdir(parents=True)
    (out / DATA_DIR).symlink_to(victim / "keep", target_is_directory=True)
    (out / RETRIEVAL_FILE).symlink_to(victim / "notes.json")
    _clear(out)
    assert (victim / "keep" / "precious.parquet").read_bytes() == b"theirs"
    assert (victim / "notes.json").read_text() == "theirs"
    assert not (out / DATA_DIR).exists() and not (out / DATA_DIR).is_symlink()
    assert not (out / RETRIEVAL_FILE).is_symlink()


def test_an_earlier_output_is_cleared_but_links_inside_it_are_not_followed(tmp_path: Path) -> None:
    victim, out = _victim(tmp_path), tmp_path / "run" / "embeddings"
    (out / DATA_DIR).mkdir(parents=True)
    (out / DATA_DIR / "part-0.parquet").write_bytes(b"old")
    (out / DATA_DIR / "inside").symlink_to(victim, target_is_directory=True)
    _clear(out)
    assert not (out / DATA_DIR).exists() and out.is_dir()
    assert (victim / "keep" / "precious.parquet").read_bytes() == b"theirs"
