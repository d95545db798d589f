"""Helpers shared by the diffusers tests (``tests/test_diffusers*.py``, ``tests/test_families.py``):
seeded generators, recorders of what a module executes (hooks removed on leaving a ``with``
block), and a count of the hooks left on a module.

Imported by name (``from diffusers_helpers import ...``): pytest puts ``tests/`` on ``sys.path``
(its default ``prepend`` import mode, ``tests/`` having no ``__init__.py``). Import it after
``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import torch

#: Every per-module hook registry torch keeps; a hook left behind shows up in one of them.
HOOK_REGISTRIES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
)


def seed(n: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``n``: the same noise for the plain and the compiled run."""
    return torch.Generator().manual_seed(n)


def hooks_on(module: torch.nn.Module) -> int:
    """How many hooks ``module`` and its submodules hold, over all of :data:`HOOK_REGISTRIES`."""
    return sum(len(getattr(m, name)) for m in module.modules() for name in HOOK_REGISTRIES)


class Hooks:
    """A context manager over hook handles: every handle given to :meth:`add` is removed when the
    ``with`` block ends, also when it raises."""

    def __init__(self):
        self.handles: list = []

    def add(self, handle) -> None:
        """Keep a hook's handle (what ``register_forward_hook`` and its kin return)."""
        self.handles.append(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


class UNetCalls(Hooks):
    """Records each execution of a UNet or ControlNet from inside it (after every hook on the
    module itself): ``batches``, its batch size; ``hidden``, the input of its first
    cross-attention block (``[rows, L, D]``; the text part when an IP-Adapter adds image tokens)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.batches: list[int] = []
        self.hidden: list[torch.Tensor] = []
        attention = next(m for m in module.modules() if type(m).__name__ == "Transformer2DModel")
        self.add(module.conv_in.register_forward_hook(lambda m, args, out: self.batches.append(out.shape[0])))
        self.add(attention.register_forward_pre_hook(self._attention, with_kwargs=True))

    def _attention(self, module, args, kwargs):
        # the first Transformer2DModel runs once per call of the module
        hidden = kwargs["encoder_hidden_states"]
        self.hidden.append((hidden[0] if isinstance(hidden, tuple) else hidden).detach().clone())
