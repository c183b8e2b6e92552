"""What a batch did, study by study: ``report.json`` for programs and ``report.csv`` for spreadsheets.

Studies are named by their non-identifying study key and an input location that cannot carry patient
data (exports name folders and files by patient: every path component is pseudonymised, see
:class:`Locator`): no patient identifier is ever written into a report, nor into the log lines a batch prints
(:class:`PathRedaction`). A study's row is also its ``done.json``, which is how a resumed run reports the studies it
skips with their original timings and metrics.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.io.atomic import atomic_write
from pipeline.wording import counted

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
REPORT_JSON, REPORT_CSV = "report.json", "report.csv"
SKIPPED_REASON = "done (finished by an earlier run)"
# Stage order of the timing columns; a study's own stages follow in the order they ran.
STAGES = ("discover", "load", "suv", "resample", "window", "fuse", "metrics", "write")


# A series or instance folder's index (1, 0003) names no one: kept. Five digits or more may be an MRN or a date.
_PLAIN_COMPONENT = re.compile(r"[0-9]{1,4}")
_PATH_END = re.compile(r"(?=[:),;'\"\s])|$")  # where a name in a path quoted in a message may end
_REASON_START = re.compile(r"(?=[:;)])|$")  # where a message goes on after a path that is not on disk
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet run a cell (OWASP: CSV injection)


def _spreadsheet_cell(value: object) -> object:
    """A report.csv cell that a spreadsheet shows as text instead of running it as a formula: a string that starts
    like one gets a leading quote (numbers stay numbers; report.json keeps the true value)."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _name_on_disk(text: str, start: int, folder: Path) -> int | None:
    """Where the longest name in ``folder`` that ``text[start:]`` begins with ends, if one is there: at a separator
    or where a message may end a path."""
    separator = text.find(os.sep, start)
    ends = [match.start() for match in _PATH_END.finditer(text, start, len(text) if separator < 0 else separator)]
    return next((end for end in reversed(ends) if end > start and os.path.lexists(folder / text[start:end])), None)


def printable(text: str) -> str:
    """Text safe for any UTF-8 writer: undecodable bytes of file names (surrogate escapes) as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Locator:
    """Names input files in shareable output: paths relative to IN_DIR, pseudonymised unless asked not to.

    With a ``key``, every path component but a folder index (up to four digits) becomes ``#`` + a keyed hash
    (HMAC-SHA256) of its bytes: the same folder gets the same name throughout a report, but neither a
    patient's name nor a dictionary of MRNs can be recovered without the key, which stays in OUT_DIR.
    ``key=None`` (opt-in) writes the relative paths themselves. IN_DIR itself is ``root`` (".": the report's
    locations are relative to it).
    """

    in_dir: Path
    key: bytes | None = None
    root: str = "."

    def _component(self, part: str) -> str:
        if self.key is None or _PLAIN_COMPONENT.fullmatch(part):
            return printable(part)
        return "#" + hmac.new(self.key, os.fsencode(part), hashlib.sha256).hexdigest()[:10]

    def location(self, path: str | os.PathLike[str]) -> str:
        """The shareable name of an input file or folder (``root`` for IN_DIR itself)."""
        path = Path(path)
        relative = path.relative_to(self.in_dir) if path.is_relative_to(self.in_dir) else path
        return "/".join(self._component(part) for part in relative.parts) or self.root

    def redact(self, text: object) -> str:
        """A one-line message with every input path in it, IN_DIR's own included, replaced by its :meth:`location`.

        Paths are found in the message as written (squashing its whitespace first would change a name such as
        ``SMITH  JANE``), then the message is made one line. See :meth:`_path_end` for where a path ends.
        """
        text, root = str(text), str(self.in_dir)
        next_path = re.compile(r"(?<=[\s(\['\"])" + re.escape(root))
        pieces, start = [], 0
        while (found := text.find(root, start)) >= 0:
            after = found + len(root)
            if text.startswith(os.sep, after):  # a path under IN_DIR
                end = self._path_end(text, after + 1, next_path)
            elif _PATH_END.match(text, after):  # IN_DIR itself (a flat export's series folder)
                end = after
            else:  # a sibling whose name begins with IN_DIR's
                pieces.append(text[start:after])
                start = after
                continue
            pieces += [text[start:found], self.location(text[found:end])]
            start = end
        return printable(" ".join(("".join(pieces) + text[start:]).split()))

    def _path_end(self, text: str, start: int, next_path: re.Pattern[str]) -> int:
        """Where the path whose names begin at ``text[start]`` ends (``next_path``: how the message's next one begins).

        A message quotes a path up to ``:``, ``)``, ``,``, ``;``, a quote or whitespace; as folder names may hold
        those too, each name is the longest candidate that exists on disk. Where a name is not on disk (a file that
        vanished after discovery), or the message seems to go on through a separator past a shorter name that is,
        the end is guessed so as to hide every name: after the last separator before the next path, where a
        reason begins.
        """
        folder = self.in_dir
        while (name_end := _name_on_disk(text, start, folder)) is not None and text.startswith(os.sep, name_end):
            folder, start = folder / text[start:name_end], name_end + 1
        following = next_path.search(text, start)
        limit = following.start() if following else len(text)
        if name_end is not None:
            reason = _REASON_START.search(text, name_end, max(name_end, limit)).start()
            if os.sep not in text[name_end:reason]:
                return name_end
        tail = max(start, text.rfind(os.sep, start, limit) + 1)
        end = _REASON_START.search(text, tail, limit).start()
        return tail + len(text[tail:end].rstrip())


class PathRedaction(logging.Filter):
    """Log lines name input files as the report does (exports name folders by patient): paths under IN_DIR by the
    ``locator``, and the folders of ``roles`` (``{folder: "<output folder>"}``) by their role."""

    def __init__(self, locator: Locator, roles: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.locator = locator
        self.roles = dict(roles or {})

    def redact(self, text: object) -> str:
        text = self.locator.redact(text)
        for path, role in sorted(self.roles.items(), key=lambda item: -len(item[0])):  # a folder in another: whole
            text = text.replace(path, role)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), None
        return True


@contextmanager
def redacted_logs(redaction: PathRedaction) -> Iterator[None]:
    """``redaction`` on every handler of the root logger while the block runs: on Python's last-resort handler where
    there is none, as in a spawned batch worker, whose warnings reach the terminal through it."""
    handlers = [handler for handler in logging.getLogger().handlers or [logging.lastResort] if handler is not None]
    for handler in handlers:
        handler.addFilter(redaction)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(redaction)


@dataclass(frozen=True)
class StudyResult:
    """One study's outcome: a row of the report and the content of its ``done.json``."""

    key: str
    status: str
    location: str
    reason: str = ""
    slices: int = 0
    duplicate_instances: int = 0  # files dropped as second copies of an instance (same SOPInstanceUID)
    ct_slices_without_pet: int = 0  # CT slices outside the PET's axial extent: blank in the output, not scored
    pet_scaling: str = ""  # how PET intensities were scaled for display: an SUV type, or a relative scaling
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    made_with: dict[str, object] = field(default_factory=dict)  # the settings its outputs depend on (see made_with)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> StudyResult:
        return cls(**json.loads(text))

    def skipped(self, location: str) -> StudyResult:
        """This finished result as a resumed run reports it, its input named at ``location`` as this run names it (the
        run that finished it may have written real paths, ``--report-paths``)."""
        return replace(self, status=SKIPPED, reason=SKIPPED_REASON, location=location)

    def csv_row(self) -> dict[str, object]:
        """Flat row: timings as ``<stage>_s``, metrics as ``<method>_<window>_<metric>``."""
        row: dict[str, object] = {"key": self.key, "status": self.status, "reason": self.reason,
                                  "location": self.location, "slices": self.slices,
                                  "duplicate_instances": self.duplicate_instances,
                                  "ct_slices_without_pet": self.ct_slices_without_pet, "pet_scaling": self.pet_scaling}
        row.update({f"{stage}_s": round(seconds, 3) for stage, seconds in self.timings.items()})
        row.update({f"{volume}_{name}": value
                    for volume, values in self.metrics.items() for name, value in values.items()})
        return row


@dataclass(frozen=True)
class FileIssue:
    """An input file discovery could not read (it belongs to no study it could name)."""

    location: str
    reason: str


@dataclass(frozen=True)
class BatchReport:
    """Every study's result (in study-key order) and the unreadable input files."""

    locator: Locator
    out_dir: Path
    studies: list[StudyResult]
    unreadable_files: list[FileIssue] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = Counter(result.status for result in self.studies)
        return {status: counted[status] for status in (OK, FAILED, SKIPPED)}

    @property
    def all_ok(self) -> bool:
        return self.counts()[FAILED] == 0

    def summary(self) -> str:
        """The one line a user reads at the end of a run."""
        counts = self.counts()
        unreadable = f", {counted(len(self.unreadable_files), 'unreadable file')}" if self.unreadable_files else ""
        return (f"{counts[OK]} ok, {counts[FAILED]} failed, {counts[SKIPPED]} skipped (done){unreadable}; "
                f"report {self.out_dir / REPORT_JSON}")

    def write(self) -> tuple[Path, Path]:
        """Write ``report.json`` and ``report.csv`` into OUT_DIR atomically."""
        document = {
            "in_dir": printable(str(self.locator.in_dir)) if self.locator.key is None else "(not recorded)",
            "out_dir": str(self.out_dir),
            "counts": self.counts(),
            "studies": [asdict(result) for result in self.studies],
            "unreadable_files": [asdict(issue) for issue in self.unreadable_files],
        }
        json_path, csv_path = self.out_dir / REPORT_JSON, self.out_dir / REPORT_CSV
        with atomic_write(json_path) as temporary:
            temporary.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        rows = [result.csv_row() for result in self.studies]
        columns = list(dict.fromkeys(column for row in rows for column in row)) or ["key", "status", "reason"]
        with atomic_write(csv_path) as temporary, temporary.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns)
            writer.writeheader()
            writer.writerows({column: _spreadsheet_cell(value) for column, value in row.items()} for row in rows)
        return json_path, csv_path
