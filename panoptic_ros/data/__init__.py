"""Datasets in COCO panoptic format, the synthetic scene generator and transforms."""
