"""Metrics: image PQ and video metrics over sequences with persistent thing ids.

``pq``: PQ with panopticapi's rules. ``video``: STQ, VPQ, IDF1, ID switches, MOTA and HOTA
(``sequence``, ``stq``, ``vpq``, ``mot``, ``hota``). ``live``: running STQ and ID switches.
"""
