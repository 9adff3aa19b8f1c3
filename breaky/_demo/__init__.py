"""The demos of ``python -m breaky demo`` and the server processes they start.

Built on breaky's public API only, as a user's program would be.
"""
