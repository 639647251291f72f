"""The growing decode cache (a speed path of ``rlft.rollout.plain``): keys and values appended into
preallocated room instead of concatenated at every decode step. Same numbers as transformers'
``DynamicCache``; the sampler swaps it in for the plain layers of each prompt batch's cache.
"""

from __future__ import annotations


def use_growing_layers(cache, tokens: int) -> None:
    """Swap the cache's empty plain layers for ones that grow into preallocated room for ``tokens``
    more tokens (see ``growing_layer_class``); sliding-window and other layer types are kept."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # transformers before layered caches: keep its cache
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and not layer.is_initialized:
            layers[i] = growing_layer_class()(tokens)


_GROWING = None


def growing_layer_class():
    """``DynamicLayer`` that appends into spare room instead of concatenating.

    DynamicLayer copies the whole cache at every decode step (``torch.cat``), O(T^2) memory
    traffic over a completion, about a tenth of decoding a small model on CPU. This layer keeps
    keys and values in buffers with room for ``reserve`` more tokens and exposes the filled part as
    a view; the numbers are the same. Anything that replaces ``keys`` (copying the cache per
    sample, selecting rows) is detected and the buffer is rebuilt from the new tensors.
    """
    global _GROWING
    if _GROWING is not None:
        return _GROWING
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self, reserve: int):
            super().__init__()
            self.reserve = reserve
            self._buffers = None  # (keys buffer, values buffer, the view last handed out)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old = self.keys.shape[-2] if self.keys.numel() else 0
            new = old + key_states.shape[-2]
            buffers = self._buffers
            if buffers is None or buffers[2] is not self.keys or new > buffers[0].shape[-2]:
                shape = (*key_states.shape[:-2], new + self.reserve, key_states.shape[-1])
                kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                if old:
                    kbuf[..., :old, :] = self.keys
                    vbuf[..., :old, :] = self.values
                buffers = (kbuf, vbuf, None)
            kbuf, vbuf = buffers[0], buffers[1]
            kbuf[..., old:new, :] = key_states
            vbuf[..., old:new, :] = value_states
            self.keys, self.values = kbuf[..., :new, :], vbuf[..., :new, :]
            self._buffers = (kbuf, vbuf, self.keys)
            return self.keys, self.values

    _GROWING = GrowingLayer
    return _GROWING
