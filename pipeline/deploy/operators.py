"""The application's own operators around the SDK's DICOM ones: select, fuse, write.

The SDK reads the DICOM headers, groups the instances and lists the CT and PET series; these operators
add what is ours: refusing a folder that is not one PET/CT study, choosing its CT and PET
as the batch job does (:func:`pipeline.io.discovery.pick_pair`), fusing with
:func:`pipeline.fusion.streaming.fuse_study` (the bundle's inference, unchanged) and writing the batch
job's derived DICOM series through the same sinks (:mod:`pipeline.fusion.writers`). They pass the
SDK's ``StudySelectedSeries`` along, as the SDK's own writers do, so the writer takes the CT
headers from the very series that was fused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from unittest.mock import patch

import numpy as np
import torch
from monai.data import MetaTensor
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries
from monai.deploy.core.domain.dicom_study import DICOMStudy
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator, dicom_data_loader_operator
from pydicom import dcmread
from pydicom.dataset import Dataset

from pipeline.errors import DcifError, InputError, error_line
from pipeline.fusion.registry import Fuser
from pipeline.fusion.streaming import FusedStudy, fuse_study
from pipeline.fusion.writers import DicomSink, NiftiSink
from pipeline.io.discovery import discover_studies
from pipeline.io.headers import slice_geometry, slice_position
from pipeline.io.patient_space import LPS_TO_RAS
from pipeline.transforms.data_path import DEFAULT_WINDOWS
from pipeline.transforms.windowing import DEFAULT_SUV_MAX

# Port names: the SDK's, so our operators plug into its DICOM operators without renaming.
SELECTION_PORT = "study_selected_series_list"
FUSED_PORT = "fused"

# Selection name -> DICOM Modality.
SELECTED_MODALITIES = {"CT": "CT", "PET": "PT"}
SELECTION_RULES = json.dumps({"selections": [
    {"name": name, "conditions": {"Modality": f"^{modality}$"}} for name, modality in SELECTED_MODALITIES.items()
]})


def selected_series(selection: StudySelectedSeries, name: str) -> DICOMSeries:
    """The series picked under selection ``name``: the first, which the selector made the batch job's choice."""
    return selection.series_by_selection_name[name][0].series


def native_datasets(series: DICOMSeries) -> list[Dataset]:
    """The pydicom datasets the SDK read for ``series`` (each remembers its ``.filename``)."""
    return [instance.get_native_sop_instance() for instance in series.get_sop_instances()]


class StepFailure(DcifError):
    """An error no check of ours foresaw (a bug, or input nothing refused), in one line naming the app's step."""


@contextmanager
def redacted_errors(redact: Callable[[object], str], step: str) -> Iterator[None]:
    """Errors leave an operator as one line with its paths redacted: Holoscan logs them itself, past any log filter.

    Ours keep their type, an OS error becomes a :class:`DcifError`, and any other a :class:`StepFailure` naming
    ``step`` whose cause is the error, for ``DCIF_TRACEBACK``.
    """
    try:
        yield
    except DcifError as error:
        raise type(error)(redact(error)) from None
    except OSError as error:
        raise DcifError(redact(error_line(error))) from None
    except Exception as error:
        raise StepFailure(redact(f"{step} failed: {error_line(error)}")) from error


class HeaderOnlyLoaderOperator(DICOMDataLoaderOperator):
    """The SDK's DICOM loader, reading the files' headers only (pydicom's ``stop_before_pixels``).

    The fusion reads the selected files itself, with the batch job's loader; the pixels the SDK read of every file
    only raised the run's peak memory, by more than the CT itself (even dropped once read, they left the heap grown).
    """

    def load_data_to_studies(self, input_path: Path) -> list[DICOMStudy]:
        with patch.object(dicom_data_loader_operator, "dcmread", partial(dcmread, stop_before_pixels=True)):
            return super().load_data_to_studies(input_path)


class PetCtSeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """The SDK's series selector with our CT and PET rules, refusing any input but one PET/CT study.

    It is the first step that sees the studies, so a bad folder stops the app here with one line,
    before any volume is built. All matches are kept, and the series the batch job would fuse go first under
    each name (see :meth:`_batch_choice_first`), so the same study fuses the same series through every door.
    """

    def __init__(self, fragment: Fragment, *args, input_folder: Path, redact: Callable[[object], str] = str,
                 **kwargs) -> None:
        self._input_folder = input_folder
        self._redact = redact
        super().__init__(fragment, *args, rules=SELECTION_RULES, all_matched=True, sort_by_sop_instance_count=True,
                         **kwargs)

    def filter(self, selection_rules: dict | None, dicom_study_list: list[DICOMStudy], all_matched: bool = False,
               sort_by_sop_instance_count: bool = False) -> list[StudySelectedSeries]:
        with redacted_errors(self._redact, self.name):
            return self._one_pet_ct_study(selection_rules, dicom_study_list, all_matched, sort_by_sop_instance_count)

    def _one_pet_ct_study(self, selection_rules: dict | None, dicom_study_list: list[DICOMStudy], all_matched: bool,
                          sort_by_sop_instance_count: bool) -> list[StudySelectedSeries]:
        if not dicom_study_list:
            raise InputError(f"{self._input_folder}: no DICOM study found")
        if len(dicom_study_list) > 1:
            raise InputError(f"{self._input_folder}: {len(dicom_study_list)} studies found; "
                             "the app fuses one study per run, give it one study's folder")
        selections = super().filter(selection_rules, dicom_study_list, all_matched, sort_by_sop_instance_count)
        found = selections[0].series_by_selection_name if selections else {}
        for name, modality in SELECTED_MODALITIES.items():
            if name not in found:
                raise InputError(f"{self._input_folder}: the study has no {name} series (Modality {modality})")
        self._batch_choice_first(selections[0])
        return selections

    def _batch_choice_first(self, selection: StudySelectedSeries) -> None:
        """Put first the CT and PET that discovery pairs (attenuation-corrected PET, the CT covering it, the CTAC over a
        diagnostic CT, never a derived CT), not the SDK's largest; a study the batch refuses fails with its reason."""
        discovered = discover_studies(self._input_folder)
        if not discovered.pairs:
            reason = discovered.failures[0].reason if discovered.failures else "no PET/CT pair found"
            raise InputError(f"{self._input_folder}: {reason}")
        pair = discovered.pairs[0]
        for name, chosen in (("CT", pair.ct.series_uid), ("PET", pair.pet.series_uid)):
            matches = selection.series_by_selection_name[name]
            matches.sort(key=lambda match: str(match.series.SeriesInstanceUID) != chosen)  # stable: the rest keep order
            if str(matches[0].series.SeriesInstanceUID) != chosen:
                raise InputError(f"{pair.ct.folder if name == 'CT' else pair.pet.folder}: the {name} series discovery "
                                 "picked is not among those the DICOM loader read")


def _pixel_position(header: Dataset, row: int, column: int) -> np.ndarray:
    """Where pixel (``row``, ``column``) of a slice lies, in LPS mm: DICOM's image plane equation (PS3.3 C.7.6.2.1.1),
    PixelSpacing being the spacing between rows, then between columns."""
    orientation, position = slice_geometry(header, header.filename)
    row_spacing, column_spacing = (float(value) for value in header.PixelSpacing)
    return position + orientation[:3] * column_spacing * column + orientation[3:] * row_spacing * row


def check_same_grid(ct: MetaTensor, sdk_headers: Sequence[Dataset]) -> None:
    """Refuse a CT volume off the grid the SDK's selected CT series describes: as many slices of as many rows and
    columns, and the corners of its first and last slices (by position) where the volume's affine puts them."""
    ordered = sorted(sdk_headers, key=lambda header: slice_position(header, header.filename))
    columns, rows, n_slices = ct.shape[1:]
    corners = [(row, column, index) for row, column in ((0, 0), (0, columns - 1), (rows - 1, 0))
               for index in (0, n_slices - 1)]
    sdk_shape = (int(ordered[0].Columns), int(ordered[0].Rows), len(ordered))
    same = sdk_shape == (columns, rows, n_slices) and all(
        np.allclose((LPS_TO_RAS @ [*_pixel_position(ordered[index], row, column), 1])[:3],
                    (ct.affine.numpy() @ [column, row, index, 1])[:3], atol=1e-3)
        for row, column, index in corners)
    if not same:
        raise DcifError(f"{ct.meta.get('filename_or_obj', 'CT series')}: the CT volume fused is not on the grid of "
                        f"the SDK's CT series ({(columns, rows, n_slices)} vs {sdk_shape} voxels, or other corners); "
                        "refusing to write a fused series off the CT grid")


class FusionOperator(Operator):
    """Load the selected CT and PET series for fusion with ``fuse_study``: the bundle's transforms and model.

    The series go in as the files the SDK selected, through our own DICOM loader, so the result is
    the bundle's inference result. The headers the SDK read are the cross-check: the CT volume must lie on the grid
    they describe, or the fused series would not lie on the CT.

    Named input: ``study_selected_series_list`` (from the selector). Named output: ``fused`` (a
    :class:`FusedStudy`, fused slab by slab as the writer streams it, so no whole fused volume is held).
    """

    def __init__(self, fragment: Fragment, *args, fusers: Mapping[str, Fuser],
                 windows: Sequence[str] = DEFAULT_WINDOWS, suv_max: float = DEFAULT_SUV_MAX,
                 device: str | torch.device = "cpu", redact: Callable[[object], str] = str, **kwargs) -> None:
        self._fusers = fusers
        self._redact = redact
        self._windows = tuple(windows)
        self._suv_max = suv_max
        self._device = device
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(SELECTION_PORT)
        spec.output(FUSED_PORT)

    def compute(self, op_input, op_output, context) -> None:
        selection = op_input.receive(SELECTION_PORT)[0]
        with redacted_errors(self._redact, self.name):
            headers = {key: native_datasets(selected_series(selection, name)) for key, name in (("ct", "CT"),
                                                                                                ("pet", "PET"))}
            files = {key: [header.filename for header in series] for key, series in headers.items()}
            result = fuse_study(files, self._fusers, self._windows, suv_max=self._suv_max, device=self._device)
            check_same_grid(result.data["ct"], headers["ct"])
        op_output.emit(result, FUSED_PORT)


class FusedDicomWriterOperator(Operator):
    """Fuse and write every volume as the batch job's derived DICOM series, and as NIfTI for convenience.

    Named input: ``fused`` (a :class:`FusedStudy`, which holds the CT and PET headers the derived
    series copies its study and geometry from and references).
    """

    def __init__(self, fragment: Fragment, *args, output_folder: Path, redact: Callable[[object], str] = str,
                 **kwargs) -> None:
        self._output_folder = Path(output_folder)
        self._redact = redact
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(FUSED_PORT)

    def compute(self, op_input, op_output, context) -> None:
        result: FusedStudy = op_input.receive(FUSED_PORT)
        with redacted_errors(self._redact, self.name):
            result.stream([NiftiSink(result, self._output_folder), DicomSink(result, self._output_folder)])
