"""Access control: key policies, identity policies and grants, and the one evaluator.

See ``DESIGN.md`` beside this file. Nothing here imports grpc or aiosqlite: the API
layer's authorization hook translates requests into :class:`AuthorizationRequest`
values and storage implements the ports in ``ports.py``.
"""
