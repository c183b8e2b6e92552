"""Counts are printed in their number."""

from __future__ import annotations

from pipeline.wording import counted


def test_a_count_takes_the_noun_in_its_number():
    assert counted(1, "unreadable file") == "1 unreadable file"
    assert counted(0, "unreadable file") == "0 unreadable files"
    assert counted(2, "PET/CT study", "PET/CT studies") == "2 PET/CT studies"
    assert counted(1, "PET/CT study", "PET/CT studies") == "1 PET/CT study"
