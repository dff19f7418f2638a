"""Scores: mask, depth and camera metrics (`metrics`), the DAVIS protocol (`davis`), per-frame mask scores
for overlays (`frame_scores`), and evaluating a model on held-out frames of a scene (`evaluate`)."""
