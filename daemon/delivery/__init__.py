"""Delivery: the hook specifications plugins implement, the plugin host that loads and contains
them, and the dispatcher that hands journaled events to them."""
