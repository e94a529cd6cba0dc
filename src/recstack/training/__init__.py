"""Training loop pieces: history, callbacks, progress display."""

from .callbacks import Callback, EarlyStopping
from .history import History
from .loop import epoch_order

__all__ = ["Callback", "EarlyStopping", "History", "epoch_order"]
