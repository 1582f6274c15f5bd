"""Layer 1: data sources, the sample contract, safe decoding (see docs/architecture.md)."""

from selfsup.data.decode import DecodeError
from selfsup.data.sources import (
    BUILTINS,
    SkipCounter,
    Source,
    SourceError,
    collate,
    describe_sources,
    open_source,
)
from selfsup.data.spec import InputSpec

__all__ = [
    "BUILTINS",
    "DecodeError",
    "InputSpec",
    "SkipCounter",
    "Source",
    "SourceError",
    "collate",
    "describe_sources",
    "open_source",
]
