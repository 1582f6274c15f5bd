"""selfsup: self-supervised pretraining and few-label evaluation."""

__version__ = "0.1.0"
