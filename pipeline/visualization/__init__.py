"""Pictures a person looks at: side-by-side panels and colour PET overlays."""

from pipeline.visualization.panels import fusion_panel, pet_overlay, to_uint8

__all__ = ["fusion_panel", "pet_overlay", "to_uint8"]
