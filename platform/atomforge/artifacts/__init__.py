"""Artifacts: the on-disk layouts of checkpoints and exports, their format versions, and model references.

Modules: checkpoint (training checkpoint directories, versions, copying to and from storage), export
(the published folder: safetensors + config.json + card, versions, writing to a folder or a hub),
card (the model card text), pretrained (a restored model and its per-task records), reference
(resolving a run dir, checkpoint, export folder or hub id to a restored model: `load_model`,
`load_pretrained`). Hub transfers themselves are `atomforge.hub`; object storage `atomforge.storage`.
"""
