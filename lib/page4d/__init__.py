"""PAGE-4D research workspace: faithful VGGT / PAGE-4D with exported dynamic-mask logits."""

__version__ = "0.1.0"
