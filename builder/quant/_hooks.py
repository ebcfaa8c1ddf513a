"""Watch the inputs of chosen submodules during a forward pass (calibration steps that need activations)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def module_inputs(model, select: Callable[[str, object], bool], on_input: Callable[[str, object], None]) -> Iterator:
    """While inside, every forward of a submodule for which ``select(name, module)`` holds calls
    ``on_input(name, first positional input)``. The hooks are removed on the way out, whatever happens."""
    hooks = []
    for name, module in model.named_modules():
        if select(name, module):

            def hook(_module, args, name=name):
                on_input(name, args[0])  # returns None: the input goes on unchanged

            hooks.append(module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
