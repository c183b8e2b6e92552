"""Pictures a person looks at: side-by-side panels and colour PET overlays, the colour fusion volume."""

from pipeline.visualization.colour import colour_fusion
from pipeline.visualization.panels import (
    column_labels,
    display_orientation,
    fusion_panel,
    hot_iron,
    pet_overlay,
    to_uint8,
)

__all__ = ["colour_fusion", "column_labels", "display_orientation", "fusion_panel", "hot_iron", "pet_overlay",
           "to_uint8"]
