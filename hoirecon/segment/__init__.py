"""2D hand/object segmentation and tracking: classical (GrabCut + DIS flow) and helpers."""
