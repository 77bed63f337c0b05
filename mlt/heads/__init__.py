"""Heads on cached features: the FCa/FCb head, its training data, training, saving and the stage."""

from mlt.heads.data import WindowData, load_windows, training_rows
from mlt.heads.model import Head, window_probs

__all__ = ["Head", "WindowData", "load_windows", "training_rows", "window_probs"]
