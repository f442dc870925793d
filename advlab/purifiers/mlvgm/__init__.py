"""MLVGM purification (Serez et al.)."""
