"""What a batch did, study by study: ``report.json`` for programs and ``report.csv`` for spreadsheets.

Studies are named by their non-identifying study key and their input location relative to IN_DIR:
no patient identifier is ever read into a report. A study's row is also its ``done.json``, which is
how a resumed run reports the studies it skips with their original timings and metrics.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.io.atomic import atomic_write

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
REPORT_JSON, REPORT_CSV = "report.json", "report.csv"
SKIPPED_REASON = "done (finished by an earlier run)"
# Stage order of the timing columns; a study's own stages follow in the order they ran.
STAGES = ("discover", "load", "suv", "resample", "window", "fuse", "metrics", "write")


def relative_to_input(text: str | os.PathLike[str], in_dir: Path) -> str:
    """A path or message with IN_DIR's prefix removed: the report names inputs relative to the batch."""
    return str(text).replace(f"{in_dir}{os.sep}", "")


@dataclass(frozen=True)
class StudyResult:
    """One study's outcome: a row of the report and the content of its ``done.json``."""

    key: str
    status: str
    location: str
    reason: str = ""
    slices: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> StudyResult:
        return cls(**json.loads(text))

    def skipped(self) -> StudyResult:
        """This finished result as a resumed run reports it."""
        return replace(self, status=SKIPPED, reason=SKIPPED_REASON)

    def csv_row(self) -> dict[str, object]:
        """Flat row: timings as ``<stage>_s``, metrics as ``<method>_<window>_<metric>``."""
        row: dict[str, object] = {"key": self.key, "status": self.status, "reason": self.reason,
                                  "location": self.location, "slices": self.slices}
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

    in_dir: Path
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
        unreadable = f", {len(self.unreadable_files)} unreadable files" if self.unreadable_files else ""
        return (f"{counts[OK]} ok, {counts[FAILED]} failed, {counts[SKIPPED]} skipped (done){unreadable}; "
                f"report {self.out_dir / REPORT_JSON}")

    def write(self) -> tuple[Path, Path]:
        """Write ``report.json`` and ``report.csv`` into OUT_DIR atomically."""
        document = {
            "in_dir": str(self.in_dir),
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
            writer.writerows(rows)
        return json_path, csv_path
