"""DICOM's patient coordinates (LPS: x to the left, y to the back) against MONAI's and NIfTI's (RAS).

The two differ by flipping x and y; the flip is its own inverse, so one matrix converts both ways.
Every affine that crosses between a DICOM header and a MetaTensor goes through it.
"""

from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_TO_LPS = LPS_TO_RAS
