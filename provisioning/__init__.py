"""The top layer: the `liandong` CLI, hub keys, node folders, the demo network, the county simulator and the Windows village kit."""
