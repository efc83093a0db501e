"""Item content: text through a pretrained language model, catalog attributes and user-supplied
vectors (images, ...), aligned to item indices (:class:`~seqrec.content.features.ItemFeatures`),
and the item encoder that fuses them with id embeddings
(:class:`~seqrec.content.fusion.ItemEncoder`).

One job per module:

- ``text``        texts -> L2-normalised vectors (sentence-transformers), cached on disk
- ``item_text``   the text of each item from its catalog row (default: the title)
- ``attributes``  categorical / multi-valued fields -> ids; numeric fields -> normalised floats
- ``vectors``     user vector files (.npy + id list, Parquet), checked, aligned to items
- ``features``    ``ContentConfig`` (which blocks) -> ``ItemFeatures`` (every block, rows 0..N)
- ``fusion``      ``FusionConfig`` (how) -> ``ItemEncoder``: index -> vector, ``table()``

Nothing heavy is imported here: ``fusion`` needs torch, and sentence-transformers is imported only
when texts are actually encoded.

Using it in a model (the contract every model can follow)::

    from seqrec.content.features import ContentConfig, build_item_features
    from seqrec.content.fusion import FusionConfig, ItemEncoder

    # data side, once per run (text vectors come from the cache after the first run)
    feats = build_item_features(seqs.items_vocab.ids, catalog, ContentConfig())
    # model side: replaces nn.Embedding(n_items + 1, d, padding_idx=0)
    self.items = ItemEncoder(n_items, d_model, config.fusion, feats)   # config.fusion: FusionConfig

    def encode(self, seq):                 # seq [B, L], 0 = padding
        x = self.items(seq)                # [B, L, D]; or table()[seq] if table() is at hand
    def item_table(self):
        return self.items.table(), None    # [N+1, D], row 0 zero

With ``FusionConfig(mode="id")`` (the default) the encoder is exactly a padded embedding table
and needs no features, so existing models keep their numbers. In a training step that needs both
ends, compute ``T = self.items.table()`` once and use ``T[seq]`` for the inputs: each content
mode's cost is one pass of the content tower over the catalog.

Saving and loading: the content blocks are buffers, so ``state_dict()`` (the artifact's
``weights.safetensors``) carries them; ``feats.save(folder)`` writes ``item_features.json`` (ids,
vocabularies, numeric statistics, text model, report) and ``item_features.safetensors``. To load,
build ``ItemEncoder(n_items, d, fusion, ItemFeatures.load(folder))`` (or pass only
``feats.schema()``: the buffers then take the weights' size) and ``load_state_dict``.

Cold items: ``big = feats.extend(catalog.df["item_id"].to_list(), catalog)`` appends the catalog
items without interactions (rows N+1..), with the same text model and frozen vocabularies;
``encoder.set_features(big)`` makes ``table()`` cover them: from content alone in mode
``content``, with a zero id part in the fused modes (train with ``id_dropout > 0`` for those).
A text query (``--query``) is ``encoder.encode_content({"text": encode_texts([q]).vectors})``.
"""
