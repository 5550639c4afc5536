"""pnbridge: the server side of the Acrobits softphone's token and removal reporters."""

__version__ = "0.1.0"
