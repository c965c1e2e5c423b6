"""Export targets: where a quantized model is written and how it is read back (``qslm.export.targets``).
Every module of this package registers its target when imported, so a new target is one new file."""
from .targets import ExportTarget, export_target, register_target, target_names, unregister_target

__all__ = ["ExportTarget", "export_target", "register_target", "target_names", "unregister_target"]
