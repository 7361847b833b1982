"""Bridges to other frameworks. ``minise.interop.torch`` reads and writes PyTorch state dicts
(torch is imported only there, and only when a function that needs it is called)."""
