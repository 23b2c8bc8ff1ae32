"""Every image method by name: `deepinsight`, `igtd`, `refined`, `raster` (importing this module
registers them all)."""

from __future__ import annotations

from textvision.deepinsight.base import METHODS, PixelMapTransformer, RasterTransformer
from textvision.deepinsight.igtd import IGTDTransformer
from textvision.deepinsight.refined import REFINEDTransformer
from textvision.deepinsight.transformer import DeepInsightTransformer

CLASSES = (DeepInsightTransformer, IGTDTransformer, REFINEDTransformer, RasterTransformer)


def get_method(name: str) -> type[PixelMapTransformer]:
    """The transformer class registered as `name`."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"image method {name!r}: expected one of {sorted(METHODS)}") from None
