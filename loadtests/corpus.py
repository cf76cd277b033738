"""The hostile-input corpus: bad lines kept as data in scenarios/corpus/, loaded with a clear error when broken."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent.parent / "scenarios" / "corpus"
MANIFEST = "manifest.json"
# A recipe may ask for this much at most: the 2 MiB over-limit line, with room to test a larger limit.
MAX_RECIPE_BYTES = 64 * 1024 * 1024
_FIELDS = frozenset({"kind", "file", "recipe", "description", "reason", "glue", "needs"})


class CorpusError(ValueError):
    """The corpus manifest or one of its files is missing or malformed."""


@dataclass(frozen=True)
class BadLine:
    """One kind of bad line: its raw bytes without a newline, and the text the collector's reason must contain."""

    kind: str
    raw: bytes
    reason: str
    description: str
    # True: the line is written without a newline, in one write with the next good line (a writer that died
    # mid-line, whose fragment must not swallow the line after it).
    glue: bool = False
    # A collector setting the kind depends on ("" when none), e.g. a --max-line-bytes below its length.
    needs: str = ""


def load_corpus(folder: Path | str = CORPUS_DIR) -> list[BadLine]:
    """Every kind of the manifest in folder, in manifest order; CorpusError says what is wrong and how to fix it."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(
            f"{path}: no corpus manifest here; restore it from git or point to the corpus folder"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: not valid JSON ({exc}); fix the syntax at that place") from None
    entries = manifest.get("kinds") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CorpusError(f'{path}: expected an object with a non-empty list "kinds"; add one entry per kind')
    lines: list[BadLine] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, 1):
        line = _bad_line(folder, path, number, entry)
        if line.kind in seen:
            raise CorpusError(f"{path}: kind #{number} {line.kind!r} appears twice; give each kind its own name")
        seen.add(line.kind)
        lines.append(line)
    return lines


def select(lines: list[BadLine], kinds: str) -> list[BadLine]:
    """The lines whose kind is in the comma-separated kinds ("" = all), in corpus order; ValueError for unknown ones."""
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    if not wanted:
        return list(lines)
    known = [line.kind for line in lines]
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise ValueError(f"--hostile-kinds: unknown kind(s) {', '.join(unknown)}; the corpus has {', '.join(known)}")
    return [line for line in lines if line.kind in wanted]


def _bad_line(folder: Path, path: Path, number: int, entry: object) -> BadLine:
    where = f"{path}: kind #{number}"
    if not isinstance(entry, dict):
        raise CorpusError(f"{where}: expected an object with kind, file or recipe, description and reason")
    kind = entry.get("kind")
    if not isinstance(kind, str) or not kind.strip():
        raise CorpusError(f'{where}: "kind" must be a non-empty string naming the kind')
    where = f"{where} ({kind})"
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise CorpusError(
            f"{where}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(_FIELDS))}"
        )
    for name in ("description", "reason"):
        if not isinstance(entry.get(name), str) or not entry[name].strip():
            raise CorpusError(f'{where}: "{name}" must be a non-empty string')
    if not isinstance(entry.get("glue", False), bool) or not isinstance(entry.get("needs", ""), str):
        raise CorpusError(f'{where}: "glue" must be true or false and "needs" a string')
    if ("file" in entry) == ("recipe" in entry):
        raise CorpusError(f'{where}: give exactly one of "file" (a file in {folder}) and "recipe"')
    raw = _read_file(folder, where, entry["file"]) if "file" in entry else _make(where, entry["recipe"])
    newline = raw.find(b"\n")
    if newline >= 0:
        raise CorpusError(
            f"{where}: the line holds a newline at byte {newline}; store one line without its newline "
            f"(the harness adds it)"
        )
    return BadLine(kind, raw, entry["reason"], entry["description"], entry.get("glue", False), entry.get("needs", ""))


def _read_file(folder: Path, where: str, name: object) -> bytes:
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise CorpusError(f'{where}: "file" must be a plain file name inside {folder}, got {name!r}')
    try:
        return (folder / name).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f'{where}: file {folder / name} does not exist; add it or correct "file"') from None


def _make(where: str, recipe: object) -> bytes:
    """{"repeat": "x", "bytes": N}: N bytes of the text repeated (cut at N)."""
    if not isinstance(recipe, dict) or set(recipe) != {"repeat", "bytes"}:
        raise CorpusError(f'{where}: "recipe" must be {{"repeat": TEXT, "bytes": N}}, got {recipe!r}')
    unit, size = recipe["repeat"], recipe["bytes"]
    if not isinstance(unit, str) or not unit or type(size) is not int or not 0 < size <= MAX_RECIPE_BYTES:
        raise CorpusError(
            f'{where}: "recipe" needs a non-empty "repeat" text and 1..{MAX_RECIPE_BYTES} "bytes", got {recipe!r}'
        )
    encoded = unit.encode()
    return (encoded * (size // len(encoded) + 1))[:size]
