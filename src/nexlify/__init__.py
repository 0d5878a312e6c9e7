"""Nexlify: reinforcement-learning trading agents for crypto spot markets.

Importing the package registers the Gymnasium environment ``nexlify/Trading-v0``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from nexlify.market.registration import register_envs

register_envs()

__all__ = ["__version__"]
