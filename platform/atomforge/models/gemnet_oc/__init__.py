"""GemNet-OC, JMP's backbone: `GemNetOCConfig.tiny() / small() (JMP-S) / large() (JMP-L)`, `.build()`.

    model.py         config presets and the backbone (interface outputs, DeNS / SCD / MASK hooks)
    graphs.py        the four sub-graphs and triplet / quadruplet indices, from the given edges
    bases.py         radial and angular bases and their shared projections
    interactions.py  triplet, quadruplet and pair message passing
    blocks.py        interaction block, output block, edge embedding
    layers.py        dense / residual layers, scale factors, efficient bilinear aggregation
"""

from atomforge.models.gemnet_oc.model import GemNetOC, GemNetOCConfig

__all__ = ["GemNetOC", "GemNetOCConfig"]
