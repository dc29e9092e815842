"""The two labels of LABELING.md, in the order of every probability column."""

LABELS = ("off_platform", "peer_pressure")
