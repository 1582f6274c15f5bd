"""Delivering a trained encoder to other runtimes. ``onnx``: pooled features as an ONNX graph."""

from selfsup.export.onnx import check_onnx, export_onnx

__all__ = ["export_onnx", "check_onnx"]
