"""From raw files to split, index-encoded sequences.

readers / movielens / amazon -> :class:`InteractionLog` + :class:`ItemCatalog`
preprocess -> vocab -> split -> batching
"""

from seqrec.data.log import InteractionLog, ItemCatalog

__all__ = ["InteractionLog", "ItemCatalog"]
